"""Shared column names, split names and file names (one place, OML `const.py` style)."""

from __future__ import annotations

# Manifest columns (one Parquet file per dataset).
IMAGE_ID = "image_id"  # stable id of the image inside its dataset (str)
PATH = "path"  # image path relative to the dataset's raw folder; "" for generated images
LABEL = "label"  # class index inside the dataset, in the official class order (int64)
CLASS_NAME = "class_name"  # human-readable class name (str)
DATASET = "dataset"  # dataset name, e.g. "cub" or "mini-cub" (str)
SPLIT = "split"  # one of SPLITS (str)
OFFSET = "offset"  # byte offset of the image in the uint8 cache; -1 when not cached (int64)
HEIGHT = "height"  # cached image height in pixels (int32)
WIDTH = "width"  # cached image width in pixels (int32)

MANIFEST_COLUMNS = (IMAGE_ID, PATH, LABEL, CLASS_NAME, DATASET, SPLIT, OFFSET, HEIGHT, WIDTH)

# Splits. "test" images are both queries and gallery (leave-one-out); In-shop-like datasets
# have separate "query" and "gallery" images.
TRAIN, TEST, QUERY, GALLERY = "train", "test", "query", "gallery"
SPLITS = (TRAIN, TEST, QUERY, GALLERY)
EVAL_SPLITS = (TEST, QUERY, GALLERY)

# Files inside a prepared dataset folder.
MANIFEST_FILE = "manifest.parquet"
CACHE_FILE = "images.u8"
READY_FILE = "READY"

# Result scopes besides dataset names.
UNIVERSAL = "universal"
HARMONIC_MEAN = "harmonic_mean"
ARITHMETIC_MEAN = "arithmetic_mean"
