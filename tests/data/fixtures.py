"""Tiny copies of the eight real datasets in their exact official layouts and file formats.

Each ``make_<name>(dir)`` writes a few small JPEGs plus the official annotation files (real
.mat files via ``scipy.io.savemat`` mirroring the official structures; .txt files with the
official headers and quirks), packs them like the official download (tgz / tar / zip), and
returns a :class:`Fixture` with the ground truth the parser must reproduce. The ground truth is
written out by hand from the official label rules, not computed with the parser's code.
:class:`FileServer` serves files over local HTTP (with ``Range`` support) for download tests.
"""

from __future__ import annotations

import http.server
import tarfile
import threading
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

__all__ = ["FIXTURES", "OFFICIAL_FOLDERS", "Fixture", "pack_tar", "pack_zip", "write_jpeg",
           "write_official_subset", "write_photo"]

_SIZES = ((40, 30), (30, 40), (48, 32), (36, 36))  # (width, height): landscape and portrait


@dataclass
class Fixture:
    """What a fixture wrote and what parsing it must give."""

    name: str
    source: Path  # what to pass as --source: an archive or a folder of official downloads
    expected: dict[str, tuple[int, int]]  # split -> (images, classes)
    labels: dict[str, int] = field(default_factory=dict)  # image_id -> label
    splits: dict[str, str] = field(default_factory=dict)  # image_id -> split
    files: dict[str, Path] = field(default_factory=dict)  # official filename -> written file
    # image_id -> the path PUMA's dataset.py joins onto the dataset's folder (OFFICIAL_FOLDERS)
    tails: dict[str, str] = field(default_factory=dict)


def write_jpeg(path: Path, seed: int, size: tuple[int, int] | None = None,
               kind: str = "rgb") -> None:
    """A small, distinct image file (``size`` = (width, height)).

    ``kind``: ``rgb`` (a YCbCr JPEG), or one of the oddities real datasets contain under a
    .jpg name: ``gray`` (1-channel JPEG, as in CUB), ``cmyk`` (CMYK JPEG, as in the ImageNet
    images of Stanford Dogs) and ``png`` (a PNG file, as Dogs' n02105855_2933.jpg).
    """
    w, h = size or _SIZES[seed % len(_SIZES)]
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    img[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    if kind == "png":
        im.save(path, format="PNG")
    else:
        im.convert({"rgb": "RGB", "gray": "L", "cmyk": "CMYK"}[kind]).save(path, format="JPEG",
                                                                           quality=85)


def write_photo(path: Path, seed: int, size: tuple[int, int] = (320, 240),
                kind: str = "rgb") -> None:
    """A photo-like image with fine texture (smooth colour fields plus noise), so that
    resizing visibly loses detail; ``kind`` as in :func:`write_jpeg`."""
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float64)
    img = np.clip(big + rng.normal(0, 24, big.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    if kind == "png":
        im.save(path, format="PNG")
    else:
        im.convert({"rgb": "RGB", "gray": "L", "cmyk": "CMYK"}[kind]).save(path, format="JPEG",
                                                                           quality=90)


def pack_tar(root: Path, entries: list[str], out: Path, gz: bool = True) -> Path:
    """Tar (gzipped unless ``gz`` is False) the ``entries`` of ``root`` under their own names."""
    with tarfile.open(out, "w:gz" if gz else "w") as tf:
        for entry in entries:
            tf.add(root / entry, arcname=entry)
    return out


def pack_zip(root: Path, entries: list[str], out: Path) -> Path:
    """Zip the ``entries`` of ``root`` (folders recursively, with directory records)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for entry in entries:
            top = root / entry
            for p in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
                zf.write(p, p.relative_to(root).as_posix())
    return out


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _counts(labels: dict[str, int], splits: dict[str, str]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for split in ("train", "test", "query", "gallery"):
        ids = [i for i, s in splits.items() if s == split]
        if ids:
            out[split] = (len(ids), len({labels[i] for i in ids}))
    return out


def make_cub(d: Path) -> Fixture:
    """CUB_200_2011.tgz: CUB_200_2011/{images/, images.txt, ...} + a stray attributes.txt."""
    stage = d / "stage"
    base = stage / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
               "004.Groove_billed_Ani"]
    per_class = [3, 2, 2, 3]
    fx = Fixture("cub", d / "CUB_200_2011.tgz", {})
    images, labels, split, boxes = [], [], [], []
    image_id = 0
    for k, (cls, n) in enumerate(zip(classes, per_class), 1):
        for j in range(n):
            image_id += 1
            name = f"{cls}/{cls.split('.')[1]}_{j + 1:04d}_{790 + image_id}.jpg"
            write_jpeg(base / "images" / name, image_id)
            images.append(f"{image_id} {name}")
            labels.append(f"{image_id} {k}")
            split.append(f"{image_id} {image_id % 2}")
            boxes.append(f"{image_id} 6.0 4.0 20.0 15.0")
            fx.labels[str(image_id)] = k - 1
            fx.splits[str(image_id)] = "train" if k <= 2 else "test"
            fx.tails[str(image_id)] = f"images/{name}"
    _write(base / "images.txt", images)
    _write(base / "image_class_labels.txt", labels)
    _write(base / "train_test_split.txt", split)
    _write(base / "bounding_boxes.txt", boxes)
    _write(base / "classes.txt", [f"{k} {c}" for k, c in enumerate(classes, 1)])
    _write(base / "README", ["CUB-200-2011 (fixture)"])
    _write(stage / "attributes.txt", ["1 has_bill_shape::curved_(up_or_down)"])
    pack_tar(stage, ["CUB_200_2011", "attributes.txt"], fx.source)
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files["CUB_200_2011.tgz"] = fx.source
    return fx


def make_cars(d: Path) -> Fixture:
    """car_ims.tgz + cars_annos.mat (struct array ``annotations``, cell ``class_names``)."""
    stage, out = d / "stage", d / "downloads"
    out.mkdir(parents=True)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012",
             "Acura TL Type-S 2008"]
    classes = [1, 1, 2, 3, 4, 2, 4, 1, 3, 4]
    fx = Fixture("cars", out, {})
    dtype = [(f, "O") for f in ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2",
                                "class", "test")]
    ann = np.zeros((1, len(classes)), dtype=dtype)
    for i, c in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_jpeg(stage / rel, 100 + i)
        # MATLAB stores each scalar as a 1x1 array of the smallest integer type.
        ann[0, i] = (np.array([rel]), np.array([[3]], np.uint8), np.array([[2]], np.uint8),
                     np.array([[30]], np.uint8), np.array([[25]], np.uint8),
                     np.array([[c]], np.uint8), np.array([[i % 2]], np.uint8))
        fx.labels[f"{i + 1:06d}"] = c - 1
        fx.splits[f"{i + 1:06d}"] = "train" if c <= 2 else "test"
        fx.tails[f"{i + 1:06d}"] = rel
    class_names = np.empty((1, len(names)), dtype=object)
    class_names[0, :] = names
    savemat(out / "cars_annos.mat", {"annotations": ann, "class_names": class_names})
    pack_tar(stage, ["car_ims"], out / "car_ims.tgz")
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files = {"car_ims.tgz": out / "car_ims.tgz", "cars_annos.mat": out / "cars_annos.mat"}
    return fx


def make_sop(d: Path) -> Fixture:
    """Stanford_Online_Products.zip with Ebay_{train,test,info,final}.txt (header line, .JPG)."""
    stage = d / "stage"
    base = stage / "Stanford_Online_Products"
    supers = ["bicycle", "cabinet", "chair"]
    # (class_id, super_class_id, product id, images); classes 1-3 train, 4-6 test.
    products = [(1, 1, "111085122871", 2), (2, 1, "111265328556", 3), (3, 2, "121077712331", 2),
                (4, 2, "131128932810", 2), (5, 3, "141002233190", 3), (6, 3, "151227634218", 2)]
    fx = Fixture("sop", d / "Stanford_Online_Products.zip", {})
    header = "image_id class_id super_class_id path"
    train, test, image_id = [header], [header], 0
    for class_id, super_id, product, n in products:
        for k in range(n):
            image_id += 1
            rel = f"{supers[super_id - 1]}_final/{product}_{k}.JPG"
            write_jpeg(base / rel, 200 + image_id)
            (train if class_id <= 3 else test).append(f"{image_id} {class_id} {super_id} {rel}")
            fx.labels[rel] = class_id - 1  # SOP images are keyed by path
            fx.splits[rel] = "train" if class_id <= 3 else "test"
            fx.tails[rel] = rel
    _write(base / "Ebay_train.txt", train)
    _write(base / "Ebay_test.txt", test)
    _write(base / "Ebay_info.txt", [header] + train[1:] + test[1:])
    _write(base / "Ebay_final.txt", [header] + train[1:] + test[1:])
    for s in supers:
        _write(base / f"{s}_final.txt", [header])
    _write(base / "LICENSE", ["fixture"])
    _write(base / "README", ["fixture"])
    pack_zip(stage, ["Stanford_Online_Products"], fx.source)
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files["Stanford_Online_Products.zip"] = fx.source
    return fx


def make_inshop(d: Path) -> Fixture:
    """The Google Drive benchmark folder: Img/img.zip, Eval/list_eval_partition.txt, Anno/."""
    stage = d / "stage"
    out = d / "In-shop Clothes Retrieval Benchmark"
    # item number, gender/category, statuses of its images (file order is not sorted).
    items = [(5, "WOMEN/Dresses", ["train"] * 3), (2, "WOMEN/Blouses_Shirts",
             ["query", "query", "gallery"]), (1, "MEN/Denim", ["train", "train"]),
             (10, "MEN/Tees_Tanks", ["gallery", "query", "gallery"]),
             (8, "WOMEN/Skirts", ["train", "train"]), (3, "WOMEN/Shorts", ["query", "gallery"])]
    train_rank = {1: 0, 5: 1, 8: 2}  # sorted item numbers of train items
    eval_rank = {2: 3, 3: 4, 10: 5}  # query+gallery items, after the train items
    fx = Fixture("inshop", out, {})
    rows, views, seed = [], ["front", "side", "back", "full", "additional"], 300
    for number, category, statuses in items:
        item = f"id_{number:08d}"
        for k, status in enumerate(statuses):
            name = f"img/{category}/{item}/{k + 1:02d}_{k + 1}_{views[k]}.jpg"
            seed += 1
            write_jpeg(stage / name, seed)
            rows.append(f"{name:<60}{item:<24}{status}")  # the official file pads its columns
            fx.labels[name] = train_rank.get(number, eval_rank.get(number))
            fx.splits[name] = status
            fx.tails[name] = name
    _write(out / "Eval" / "list_eval_partition.txt",
           [str(len(rows)), "image_name item_id evaluation_status", *rows])
    _write(out / "Anno" / "list_item_inshop.txt",
           [str(len(items)), *[f"id_{n:08d}" for n, _, _ in items]])
    _write(out / "README.txt", ["In-shop Clothes Retrieval Benchmark (fixture)"])
    (out / "Img").mkdir(parents=True)
    pack_zip(stage, ["img"], out / "Img" / "img.zip")
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files = {"img.zip": out / "Img" / "img.zip",
                "list_eval_partition.txt": out / "Eval" / "list_eval_partition.txt"}
    return fx


def make_nabirds(d: Path) -> Fixture:
    """nabirds.tar.gz: UUID image ids with dashes, file names without, sparse class ids."""
    stage = d / "stage"
    base = stage / "nabirds"
    used = {817: ("Barn Owl", 2), 295: ("Common Loon", 3), 1000: ("Red-tailed Hawk (Dark morph)",
            2), 313: ("Snow Goose", 2), 42: ("Wood Duck", 3)}
    rank = {42: 0, 295: 1, 313: 2, 817: 3, 1000: 4}  # sorted ids; ranks 0-2 train (ceil 5/2)
    fx = Fixture("nabirds", d / "nabirds.tar.gz", {})
    images, labels, split, sizes, seed = [], [], [], [], 400
    for cls in (817, 295, 1000, 313, 42):
        for _ in range(used[cls][1]):
            seed += 1
            uid = uuid.uuid5(uuid.NAMESPACE_URL, f"nabirds-{seed}")
            name = f"{cls:04d}/{uid.hex}.jpg"
            write_jpeg(base / "images" / name, seed)
            images.append(f"{uid} {name}")
            labels.append(f"{uid} {cls}")
            split.append(f"{uid} {seed % 2}")
            sizes.append(f"{uid} 40 30")
            fx.labels[str(uid)] = rank[cls]
            fx.splits[str(uid)] = "train" if rank[cls] < 3 else "test"
            fx.tails[str(uid)] = f"images/{name}"
    # classes.txt lists every taxonomy node, most without images.
    nodes = [(0, "Birds"), (1, "Perching Birds"), (2, "Ducks, Geese, and Swans")]
    nodes += [(c, n) for c, (n, _) in sorted(used.items())]
    _write(base / "images.txt", images)
    _write(base / "image_class_labels.txt", labels)
    _write(base / "train_test_split.txt", split)
    _write(base / "sizes.txt", sizes)
    _write(base / "classes.txt", [f"{c} {n}" for c, n in nodes])
    _write(base / "hierarchy.txt", [f"{c} 2" for c in sorted(used)] + ["2 0", "1 0"])
    pack_tar(stage, ["nabirds"], fx.source)
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files["nabirds.tar.gz"] = fx.source
    return fx


def make_dogs(d: Path) -> Fixture:
    """images.tar (Images/<wnid>-<breed>/...) + lists.tar (file_list/train_list/test_list.mat)."""
    stage, out = d / "stage", d / "downloads"
    out.mkdir(parents=True)
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog",
              "n02086079-Pekinese"]
    per_breed = [3, 2, 2, 3]
    fx = Fixture("dogs", out, {})
    files, labels, seed = [], [], 500
    # Like the real set (its images come from ImageNet): one PNG and one CMYK JPEG named .jpg,
    # and a grey-scale JPEG.
    odd = {502: "png", 505: "cmyk", 508: "gray"}
    for k, (breed, n) in enumerate(zip(breeds, per_breed), 1):
        for j in range(n):
            seed += 1
            stem = f"{breed.split('-')[0]}_{1000 + 17 * j}"
            write_jpeg(stage / "Images" / breed / f"{stem}.jpg", seed, kind=odd.get(seed, "rgb"))
            files.append(f"{breed}/{stem}.jpg")
            labels.append(k)
            fx.labels[stem] = k - 1
            fx.splits[stem] = "train" if k <= 2 else "test"
            fx.tails[stem] = f"Images/{breed}/{stem}.jpg"

    def cells(values: list[str]) -> np.ndarray:  # an N x 1 MATLAB cell array of strings
        arr = np.empty((len(values), 1), dtype=object)
        arr[:, 0] = values
        return arr

    def write_list(path: Path, idx: list[int]) -> None:
        savemat(path, {"file_list": cells([files[i] for i in idx]),
                       "annotation_list": cells([files[i][:-4] for i in idx]),
                       "labels": np.array([[labels[i]] for i in idx], dtype=np.float64)})

    write_list(stage / "file_list.mat", list(range(len(files))))
    write_list(stage / "train_list.mat", list(range(0, len(files), 2)))
    write_list(stage / "test_list.mat", list(range(1, len(files), 2)))
    pack_tar(stage, ["Images"], out / "images.tar", gz=False)
    pack_tar(stage, ["file_list.mat", "train_list.mat", "test_list.mat"], out / "lists.tar",
             gz=False)
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files = {"images.tar": out / "images.tar", "lists.tar": out / "lists.tar"}
    return fx


def make_flowers(d: Path) -> Fixture:
    """102flowers.tgz (jpg/image_%05d.jpg) + imagelabels.mat (1xN) + setid.mat (1xK ids)."""
    stage, out = d / "stage", d / "downloads"
    out.mkdir(parents=True)
    classes = [3, 3, 1, 2, 4, 1, 2, 3, 4, 1, 2, 4]  # 1-based labels of image_00001..00012
    fx = Fixture("flowers", out, {})
    for i, c in enumerate(classes, 1):
        write_jpeg(stage / "jpg" / f"image_{i:05d}.jpg", 600 + i)
        fx.labels[f"image_{i:05d}"] = c - 1
        fx.splits[f"image_{i:05d}"] = "train" if c <= 2 else "test"
        fx.tails[f"image_{i:05d}"] = f"jpg/image_{i:05d}.jpg"
    savemat(out / "imagelabels.mat", {"labels": np.array([classes], dtype=np.uint8)})
    perm = np.random.default_rng(0).permutation(len(classes)) + 1
    savemat(out / "setid.mat", {"trnid": perm[None, :4].astype(np.uint16),
                                "valid": perm[None, 4:7].astype(np.uint16),
                                "tstid": perm[None, 7:].astype(np.uint16)})
    pack_tar(stage, ["jpg"], out / "102flowers.tgz")
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files = {n: out / n for n in ("102flowers.tgz", "imagelabels.mat", "setid.mat")}
    return fx


def make_aircraft(d: Path) -> Fixture:
    """fgvc-aircraft-2013b.tar.gz: data/images_variant_*.txt with spaces and slashes in names."""
    stage = d / "stage"
    data = stage / "fgvc-aircraft-2013b" / "data"
    # PUMA ranks '_'.join(name.split()): "BAE-125" sorts before "BAE_146-200".
    rank = {"707-320": 0, "BAE-125": 1, "BAE 146-200": 2, "F-16A/B": 3, "F/A-18": 4,
            "Falcon 2000": 5}
    order = ["F/A-18", "707-320", "Falcon 2000", "BAE 146-200", "F-16A/B", "BAE-125"]
    fx = Fixture("aircraft", d / "fgvc-aircraft-2013b.tar.gz", {})
    trainval, test, seed = [], [], 700
    for v in order:
        for k in range(2):
            seed += 1
            image_id = "0209554" if seed == 701 else f"{1000000 + 37 * seed:07d}"
            write_jpeg(data / "images" / f"{image_id}.jpg", seed)
            (trainval if k == 0 else test).append(f"{image_id} {v}")
            fx.labels[image_id] = rank[v]
            fx.splits[image_id] = "train" if rank[v] < 3 else "test"
            fx.tails[image_id] = f"images/{image_id}.jpg"
    _write(data / "variants.txt", sorted(rank))
    _write(data / "images_variant_trainval.txt", trainval)
    _write(data / "images_variant_train.txt", trainval[::2])
    _write(data / "images_variant_val.txt", trainval[1::2])
    _write(data / "images_variant_test.txt", test)
    _write(data / "images_box.txt", [f"{line.split()[0]} 1 1 30 20" for line in trainval + test])
    _write(stage / "fgvc-aircraft-2013b" / "README.md", ["FGVC-Aircraft 2013b (fixture)"])
    pack_tar(stage, ["fgvc-aircraft-2013b"], fx.source)
    fx.expected = _counts(fx.labels, fx.splits)
    fx.files["fgvc-aircraft-2013b.tar.gz"] = fx.source
    return fx


# PUMA's dataset.py: each dataset's folder under --data_path, and the name and ds_ID in the
# official few-shot file names (few_shot/dataset_<DS>_shot_<K>.pkl).
OFFICIAL_FOLDERS = {"cub": "CUB_200_2011", "cars": "cars196", "sop": "Stanford_Online_Products",
                    "inshop": "Inshop_Clothes/Img", "nabirds": "nabirds", "dogs": "dogs",
                    "flowers": "flowers", "aircraft": "fgvc-aircraft-2013b/data"}
OFFICIAL_IDS = {"cub": ("CUB", 0), "cars": ("Cars", 1), "sop": ("SOP", 2),
                "inshop": ("Inshop", 3), "nabirds": ("NABird", 4), "dogs": ("Dogs", 5),
                "flowers": ("Flowers", 6), "aircraft": ("Aircraft", 7)}
AUTHORS_DATA = "/home/tjddus9597/Data/DML"  # the prefix of every path in the official pickles


def write_official_subset(out: Path, fx: Fixture, shots: int, seed: int = 0) -> list[str]:
    """A K-shot subset of ``fx``'s training images in the official format and path style.

    As the official ``dataset.py`` writes them: a dict of lists ``ys`` (class in the dataset),
    ``I`` (the image's index among the training images), ``im_paths`` (absolute path on the
    authors' machine) and ``ds_ID``, pickled with the highest protocol; ``shots`` images per
    class, drawn with ``random.sample`` (``random.choices`` when a class has fewer). Returns the
    image ids in the file's order.
    """
    import pickle
    import random

    rnd = random.Random(seed)
    ds, ds_id = OFFICIAL_IDS[fx.name]
    train = [i for i in fx.labels if fx.splits[i] == "train"]
    by_class: dict[int, list[tuple[int, str]]] = {}
    for index, image_id in enumerate(train):
        by_class.setdefault(fx.labels[image_id], []).append((index, image_id))
    data: dict[str, list] = {"ys": [], "I": [], "im_paths": [], "ds_ID": []}
    picked = []
    for label, items in by_class.items():
        pick = (rnd.sample(items, shots) if len(items) >= shots
                else rnd.choices(items, k=shots))
        for index, image_id in pick:
            data["ys"].append(label)
            data["I"].append(index)
            data["im_paths"].append(
                f"{AUTHORS_DATA}/{OFFICIAL_FOLDERS[fx.name]}/{fx.tails[image_id]}")
            data["ds_ID"].append(ds_id)
            picked.append(image_id)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"dataset_{ds}_shot_{shots}.pkl", "wb") as fh:
        pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return picked


class FileServer:
    """A tiny HTTP file server in a thread; records (path, Range header) of every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.honor_range = True
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.split("?")[0].lstrip("/")
                rng = self.headers.get("Range")
                owner.requests.append((name, rng))
                data = owner.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and owner.honor_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{name}?download=1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


FIXTURES: dict[str, Callable[[Path], Fixture]] = {
    "cub": make_cub,
    "cars": make_cars,
    "sop": make_sop,
    "inshop": make_inshop,
    "nabirds": make_nabirds,
    "dogs": make_dogs,
    "flowers": make_flowers,
    "aircraft": make_aircraft,
}
