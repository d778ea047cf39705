"""Shared column names, split names and file names (one place, OML `const.py` style)."""

from __future__ import annotations

# Manifest columns (one Parquet file per dataset).
IMAGE_ID = "image_id"  # stable id of the image inside its dataset (str)
PATH = "path"  # image path relative to the dataset's raw folder; "" for generated images
LABEL = "label"  # class index inside the dataset, in the official class order (int64)
CLASS_NAME = "class_name"  # human-readable class name (str)
DATASET = "dataset"  # dataset name, e.g. "cub" or "mini-cub" (str)
SPLIT = "split"  # one of SPLITS (str)
OFFSET = "offset"  # byte offset of the image in the pack or uint8 cache; -1 when in neither (int64)
HEIGHT = "height"  # image height in pixels: full (pack) or cached (uint8 cache); 0 unknown (int32)
WIDTH = "width"  # image width in pixels, as HEIGHT (int32)
NBYTES = "nbytes"  # length of the image's original file in the pack; 0 when not packed (int64)

MANIFEST_COLUMNS = (IMAGE_ID, PATH, LABEL, CLASS_NAME, DATASET, SPLIT, OFFSET, HEIGHT, WIDTH,
                    NBYTES)

# Splits. "test" images are both queries and gallery (leave-one-out); In-shop-like datasets
# have separate "query" and "gallery" images.
TRAIN, TEST, QUERY, GALLERY = "train", "test", "query", "gallery"
SPLITS = (TRAIN, TEST, QUERY, GALLERY)
EVAL_SPLITS = (TEST, QUERY, GALLERY)

# Files inside a prepared dataset folder.
MANIFEST_FILE = "manifest.parquet"
CACHE_FILE = "images.u8"
PACK_FILE = "images.pack"
READY_FILE = "READY"

# Where a prepared dataset's pixels come from (READY "image_source", Prepared.image_source):
# the original files packed unchanged (full resolution; the real-data default), a uint8 cache
# resized to a shorter side of READY "image_size", the original files read in place, or the
# mini generator's uint8 images (stored at their native "image_size").
PACKED, RESIZED, FILES, GENERATED = "packed", "resized", "files", "generated"
IMAGE_SOURCES = (PACKED, RESIZED, FILES, GENERATED)

# Result scopes besides dataset names.
UNIVERSAL = "universal"
HARMONIC_MEAN = "harmonic_mean"
ARITHMETIC_MEAN = "arithmetic_mean"
