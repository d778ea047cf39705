"""The eight real datasets, prepared through the real path on tiny official-format fixtures.

Covers parsing of every official layout, label conventions, the image cache and loading, and
the failure modes: checksum mismatch, truncated download or archive, path traversal, a crash
while caching, manual-only hosts, resumed downloads, ``--no-cache`` and extracted folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.data.fixtures import FIXTURES, FileServer, Fixture
from umlbench import const as C
from umlbench.data import real
from umlbench.data.cache import CacheWriter
from umlbench.data.download import download, extract, file_digests
from umlbench.data.loading import ImageTable, TransformConfig, build_transform, eval_loader
from umlbench.data.prepare import is_ready, load_prepared, prepare_one, sha256_file
from umlbench.data.registry import DATASETS, SUITES, Resource
from umlbench.errors import DataError, UserError

NAMES = SUITES["uml"]
SIZE = 16  # cached shorter side in these tests
# Official class totals (train + test) from the PUMA split table.
CLASSES = {"cub": 200, "cars": 196, "sop": 22_634, "inshop": 7_982, "nabirds": 555, "dogs": 120,
           "flowers": 102, "aircraft": 100}


def _quiet(stage: str, done: int, total: int) -> None:
    """A progress hook that draws nothing (the default is a rich bar)."""


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Fixture]:
    d = tmp_path_factory.mktemp("fixtures")
    return {name: make(d / name) for name, make in FIXTURES.items()}


def _prepare(name: str, fx: Fixture, root: Path, **kwargs):
    spec = dataclasses.replace(DATASETS.get(name), expected=fx.expected)
    kwargs.setdefault("source", str(fx.source))
    kwargs.setdefault("progress", _quiet)
    return prepare_one(spec, root, image_size=SIZE, workers=kwargs.pop("workers", 1), **kwargs)


def _first_batch(prepared, input_size: int = 12):
    m = prepared.manifest
    rows = pd.DataFrame({"source": 0, "row": np.arange(len(m)), "target": m[C.LABEL]})
    cfg = TransformConfig(input_size=input_size, mean=(0.5,) * 3, std=(0.5,) * 3)
    table = ImageTable([prepared], rows, build_transform(cfg, train=False))
    return next(iter(eval_loader(table, batch_size=4)))


# ---- every dataset, end to end ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_official_layout_prepares_with_official_labels(name, made, tmp_path):
    fx = made[name]
    report = _prepare(name, fx, tmp_path)
    assert report.status == "prepared"
    assert report.counts == {s: {"images": n, "classes": c} for s, (n, c) in fx.expected.items()}
    p = load_prepared(tmp_path, name)
    m = p.manifest
    assert list(m.columns) == list(C.MANIFEST_COLUMNS) and (m[C.DATASET] == name).all()
    assert dict(zip(m[C.IMAGE_ID], m[C.LABEL])) == fx.labels
    assert dict(zip(m[C.IMAGE_ID], m[C.SPLIT])) == fx.splits
    # Training classes come first, contiguous, disjoint from the evaluation classes.
    train = sorted(set(m.loc[m[C.SPLIT] == C.TRAIN, C.LABEL]))
    evals = sorted(set(m.loc[m[C.SPLIT] != C.TRAIN, C.LABEL]))
    assert train == list(range(len(train)))
    assert evals == list(range(len(train), len(train) + len(evals)))
    # The cache holds every image with its shorter side resized to SIZE, aspect kept.
    for i, r in m.iterrows():
        with Image.open(p.raw_dir / r[C.PATH]) as im:
            w, h = im.size
        assert min(r[C.HEIGHT], r[C.WIDTH]) == SIZE
        assert (r[C.WIDTH], r[C.HEIGHT]) == (round(w * SIZE / min(w, h)),
                                             round(h * SIZE / min(w, h)))
        assert p.load_image(i).shape == (r[C.HEIGHT], r[C.WIDTH], 3)
    ready = json.loads((tmp_path / name / C.READY_FILE).read_text())
    assert ready["cache"] is True and ready["image_size"] == SIZE
    assert ready["source"] == str(Path(fx.source).resolve())
    assert ready["raw_dir"] == str((tmp_path / "_raw" / name).resolve())
    images, targets, positions = _first_batch(p)
    assert images.shape == (4, 3, 12, 12) and images.dtype.is_floating_point
    assert targets.tolist() == m[C.LABEL].iloc[:4].tolist() and positions.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_complete(name):
    spec = DATASETS.get(name)
    assert spec.name == name and spec.suite == "uml" and spec.parse is not None
    assert spec.title and spec.license and spec.homepage and spec.citation and spec.resources
    splits = set(spec.expected)
    assert splits == ({C.TRAIN, C.QUERY, C.GALLERY} if name == "inshop" else {C.TRAIN, C.TEST})
    test_classes = spec.expected.get(C.TEST, spec.expected.get(C.QUERY))[1]
    assert spec.expected[C.TRAIN][1] + test_classes == CLASSES[name]
    for res in spec.resources:
        if res.url is None:
            assert spec.manual and "--source" in spec.manual and res.filename in spec.manual
        else:
            assert res.md5 or res.sha256
    assert ("cars" in name or "inshop" in name or "nabirds" in name) == bool(spec.manual)


# ---- sources: extracted folders, URLs, manual hosts ---------------------------------------


@pytest.mark.parametrize("name, inner", [("cub", "CUB_200_2011"),
                                         ("aircraft", "fgvc-aircraft-2013b/data")])
def test_extracted_folder_is_used_in_place(name, inner, made, tmp_path):
    fx = made[name]
    extract(fx.source, tmp_path / "mine")
    folder = tmp_path / "mine" / inner
    _prepare(name, fx, tmp_path / "root", source=str(folder))
    p = load_prepared(tmp_path / "root", name)
    assert p.ready["raw_dir"] == str(folder.resolve())
    assert dict(zip(p.manifest[C.IMAGE_ID], p.manifest[C.LABEL])) == fx.labels
    assert not (tmp_path / "root" / "_raw" / name).exists()  # nothing copied


def test_puma_data_path_with_several_datasets(made, tmp_path):
    """PUMA's data_path: CUB_200_2011/, nabirds/, dogs/, flowers/ side by side."""
    data = tmp_path / "data"
    extract(made["cub"].source, data)
    extract(made["nabirds"].source, data)
    for name in ("dogs", "flowers"):
        for filename, path in made[name].files.items():
            if filename.endswith((".tar", ".tgz")):
                extract(path, data / name)
            else:
                shutil.copy(path, data / name / filename)
    for name in ("cub", "nabirds", "dogs", "flowers"):
        _prepare(name, made[name], tmp_path / "root", source=str(data))
        m = load_prepared(tmp_path / "root", name).manifest
        assert dict(zip(m[C.IMAGE_ID], m[C.LABEL])) == made[name].labels


def test_aircraft_trainvaltest_union_is_enough(made, tmp_path):
    fx = made["aircraft"]
    extract(fx.source, tmp_path)
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    union = [(data / f"images_variant_{s}.txt").read_text() for s in ("trainval", "test")]
    (data / "images_variant_trainvaltest.txt").write_text("".join(union))
    for s in ("trainval", "test"):
        (data / f"images_variant_{s}.txt").unlink()
    rows = DATASETS.get("aircraft").parse(tmp_path)
    assert dict(zip(rows[C.IMAGE_ID], rows[C.LABEL])) == fx.labels


def test_sop_renumbered_copy_prepares_the_same_dataset(made, tmp_path):
    """SOP images are keyed by path: a copy whose Ebay_test.txt counts its image ids from 1
    again (so they collide with Ebay_train.txt's) prepares the same images, labels and splits;
    a path listed twice is named."""
    fx = made["sop"]
    extract(fx.source, tmp_path / "x")
    base = tmp_path / "x" / "Stanford_Online_Products"
    test_txt = base / "Ebay_test.txt"
    header, *lines = test_txt.read_text().splitlines()
    test_txt.write_text("\n".join([header] + [f"{k} {line.split(' ', 1)[1]}"
                                              for k, line in enumerate(lines, 1)]) + "\n")
    train_ids = {line.split()[0] for line in (base / "Ebay_train.txt").read_text().splitlines()[1:]}
    assert train_ids & {str(k) for k in range(1, len(lines) + 1)}  # the ids really collide
    _prepare("sop", fx, tmp_path / "root", source=str(base))
    m = load_prepared(tmp_path / "root", "sop").manifest
    assert dict(zip(m[C.IMAGE_ID], m[C.LABEL])) == fx.labels
    assert dict(zip(m[C.IMAGE_ID], m[C.SPLIT])) == fx.splits
    test_txt.write_text(test_txt.read_text() + lines[0] + "\n")  # the first test image again
    dup = lines[0].split()[3]
    with pytest.raises(DataError, match=f"{dup}.* listed twice"):
        _prepare("sop", fx, tmp_path / "root2", source=str(base))


@pytest.mark.parametrize("name, hint", [("cars", "huggingface.co"),
                                        ("inshop", "drive.google.com"),
                                        ("nabirds", "dl.allaboutbirds.org")])
def test_manual_host_without_source_explains_the_steps(name, hint, tmp_path):
    with pytest.raises(UserError) as err:
        prepare_one(DATASETS.get(name), tmp_path, progress=_quiet)
    assert hint in str(err.value) and "--source" in str(err.value)
    assert DATASETS.get(name).manual in str(err.value)
    assert not is_ready(tmp_path, name)


def test_manual_file_dropped_into_downloads_is_verified_and_used(made, tmp_path):
    fx = made["nabirds"]
    (tmp_path / "_downloads").mkdir()
    shutil.copy(fx.source, tmp_path / "_downloads" / "nabirds.tar.gz")
    md5 = file_digests(fx.source, ("md5",))["md5"]
    spec = dataclasses.replace(DATASETS.get("nabirds"), expected=fx.expected,
                               resources=(Resource("nabirds.tar.gz", None, md5=md5),))
    assert prepare_one(spec, tmp_path, image_size=SIZE, progress=_quiet).status == "prepared"


def test_missing_annotation_file_is_named(made, tmp_path):
    fx = made["cub"]
    extract(fx.source, tmp_path / "x")
    (tmp_path / "x" / "CUB_200_2011" / "image_class_labels.txt").unlink()
    with pytest.raises(DataError, match="image_class_labels.txt"):
        _prepare("cub", fx, tmp_path / "root", source=str(tmp_path / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="images.txt not found"):
        _prepare("cub", fx, tmp_path / "root", source=str(tmp_path / "empty"))


def test_malformed_annotation_is_a_one_line_data_error(made, tmp_path):
    fx = made["cub"]
    extract(fx.source, tmp_path / "x")
    labels = tmp_path / "x" / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("1 1\n", "1 one\n", 1))
    with pytest.raises(DataError, match="cannot parse the cub annotations") as err:
        _prepare("cub", fx, tmp_path / "root", source=str(tmp_path / "x" / "CUB_200_2011"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_is_named(workers, made, tmp_path):
    fx = made["dogs"]
    bad = tmp_path / "x" / "Images" / "n02085936-Maltese_dog" / "n02085936_1000.jpg"
    for archive in fx.files.values():
        extract(archive, tmp_path / "x")
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match="n02085936_1000.jpg: cannot decode image"):
        _prepare("dogs", fx, tmp_path / "root", source=str(tmp_path / "x"), workers=workers)
    assert not is_ready(tmp_path / "root", "dogs")


# ---- cache, no-cache, workers, crash and resume --------------------------------------------


def test_no_cache_reads_the_original_files(made, tmp_path):
    fx = made["flowers"]
    _prepare("flowers", fx, tmp_path, cache=False)
    p = load_prepared(tmp_path, "flowers")
    assert p.cache is None and not (tmp_path / "flowers" / C.CACHE_FILE).exists()
    assert (p.manifest[C.OFFSET] == -1).all() and (p.manifest[C.HEIGHT] == 0).all()
    with Image.open(p.raw_dir / p.manifest[C.PATH].iloc[0]) as im:
        assert p.load_image(0).shape == (im.height, im.width, 3)
    images, _, _ = _first_batch(p)
    assert images.shape == (4, 3, 12, 12)
    (p.raw_dir / p.manifest[C.PATH].iloc[3]).unlink()
    with pytest.raises(DataError, match="image file not found"):
        _prepare("flowers", fx, tmp_path, cache=False, force=True)


def test_worker_pool_writes_the_same_cache(made, tmp_path, recwarn):
    fx = made["sop"]
    _prepare("sop", fx, tmp_path / "a", workers=1)
    _prepare("sop", fx, tmp_path / "b", workers=2)
    assert not [w for w in recwarn if "workers failed" in str(w.message)]  # the pool really ran
    for f in (C.CACHE_FILE, C.MANIFEST_FILE):
        assert sha256_file(tmp_path / "a" / "sop" / f) == sha256_file(tmp_path / "b" / "sop" / f)


def test_crash_while_caching_then_rerun_finishes(made, tmp_path, monkeypatch):
    fx = made["cub"]
    append, calls = CacheWriter.append, []

    def crash_after_three(self, image):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated crash")
        return append(self, image)

    monkeypatch.setattr(CacheWriter, "append", crash_after_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _prepare("cub", fx, tmp_path)
    assert not is_ready(tmp_path, "cub") and not (tmp_path / "cub").exists()
    assert (tmp_path / "_raw" / "cub" / ".umlbench" / "CUB_200_2011.tgz.json").exists()

    monkeypatch.setattr(CacheWriter, "append", append)

    def no_second_unpack(*args):
        raise AssertionError("the archive was unpacked again")

    monkeypatch.setattr(real, "extract", no_second_unpack)
    (tmp_path / ".tmp-cub-999999").mkdir()  # what a killed process leaves behind
    report = _prepare("cub", fx, tmp_path, progress=None)  # also draws the rich bar
    assert report.status == "prepared" and is_ready(tmp_path, "cub")
    assert not (tmp_path / ".tmp-cub-999999").exists()
    assert _prepare("cub", fx, tmp_path).status == "skipped"


# ---- archives: truncated and path traversal ---------------------------------------------


def test_truncated_source_archive_is_a_data_error(made, tmp_path):
    fx = made["cub"]
    data = fx.source.read_bytes()
    cut = tmp_path / "CUB_200_2011.tgz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        _prepare("cub", fx, tmp_path / "root", source=str(cut))
    assert not is_ready(tmp_path / "root", "cub")
    assert not list((tmp_path / "root" / "_raw").rglob("*.json"))  # nothing marked unpacked


def _evil_tar(path: Path, kind: str) -> None:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo("../evil.txt" if kind == "dotdot" else "link")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))


def _evil_zip(path: Path, kind: str) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../evil.txt" if kind == "dotdot" else "/abs/evil.txt", "evil")


@pytest.mark.parametrize("fmt, kind", [("tar.gz", "dotdot"), ("tar.gz", "symlink"),
                                       ("zip", "dotdot"), ("zip", "absolute")])
def test_path_traversal_archive_is_refused(fmt, kind, made, tmp_path):
    archive = tmp_path / "in" / f"evil.{fmt}"
    archive.parent.mkdir()
    (_evil_zip if fmt == "zip" else _evil_tar)(archive, kind)
    with pytest.raises(DataError, match="unsafe|outside"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    if fmt == "zip":  # every member is checked before anything is written
        assert not (tmp_path / "out" / "fine.txt").exists()
    with pytest.raises(DataError):
        _prepare("cub", made["cub"], tmp_path / "root", source=str(archive))
    assert not is_ready(tmp_path / "root", "cub")


# ---- downloads: local HTTP server with Range support ---------------------------------------


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    srv = FileServer()
    yield srv
    srv.close()


def _served_spec(name: str, fx: Fixture, server: FileServer, **overrides):
    """The spec with its official resources pointed at the local server."""
    resources = []
    for filename, path in fx.files.items():
        data = path.read_bytes()
        server.files[filename] = data
        kind = {"url": server.url(filename), "md5": file_digests(path, ("md5",))["md5"],
                "size": len(data), **overrides}
        base = next(r for r in DATASETS.get(name).resources if r.filename == filename)
        resources.append(dataclasses.replace(base, **kind, sha256=None))
    return dataclasses.replace(DATASETS.get(name), expected=fx.expected,
                               resources=tuple(resources))


def test_official_download_verifies_and_is_skipped_on_rerun(made, tmp_path, server):
    spec = _served_spec("flowers", made["flowers"], server)
    report = prepare_one(spec, tmp_path, image_size=SIZE, progress=_quiet)
    assert report.status == "prepared"
    downloaded = sorted(p.name for p in (tmp_path / "_downloads").iterdir())
    assert downloaded == sorted(made["flowers"].files)
    assert load_prepared(tmp_path, "flowers").ready["source"].startswith("http://127.0.0.1")
    n = len(server.requests)
    assert prepare_one(spec, tmp_path, image_size=SIZE, force=True,
                       progress=_quiet).status == "prepared"
    assert len(server.requests) == n  # downloads and unpacking were reused


def test_url_source_is_downloaded(made, tmp_path, server):
    fx = made["aircraft"]
    server.files["mirror.tar.gz"] = fx.source.read_bytes()
    _prepare("aircraft", fx, tmp_path, source=server.url("mirror.tar.gz"))
    assert (tmp_path / "_downloads" / "mirror.tar.gz").exists()
    assert is_ready(tmp_path, "aircraft")


def test_checksum_mismatch_moves_the_file_aside(made, tmp_path, server):
    spec = _served_spec("cub", made["cub"], server, md5="0" * 32)
    actual = file_digests(made["cub"].source, ("md5",))["md5"]
    with pytest.raises(DataError) as err:
        prepare_one(spec, tmp_path, image_size=SIZE, progress=_quiet)
    msg = str(err.value)
    assert "CUB_200_2011.tgz" in msg and "expected " + "0" * 32 in msg and actual in msg
    assert "\n" not in msg
    assert not is_ready(tmp_path, "cub") and not (tmp_path / "cub").exists()
    assert (tmp_path / "_downloads" / "CUB_200_2011.tgz.bad").exists()
    assert not (tmp_path / "_downloads" / "CUB_200_2011.tgz").exists()


def test_truncated_download_is_a_data_error(made, tmp_path, server):
    spec = _served_spec("cub", made["cub"], server)
    full = server.files["CUB_200_2011.tgz"]
    server.files["CUB_200_2011.tgz"] = full[: len(full) // 3]  # the host serves a short file
    with pytest.raises(DataError, match=f"truncated .*expected {len(full)}"):
        prepare_one(spec, tmp_path, image_size=SIZE, progress=_quiet)
    assert not is_ready(tmp_path, "cub")
    assert (tmp_path / "_downloads" / "CUB_200_2011.tgz.bad").exists()


@pytest.mark.parametrize("honor_range", [True, False])
def test_download_resumes_a_part_file(honor_range, tmp_path, server):
    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    server.files["big.bin"] = data
    server.honor_range = honor_range
    dest = tmp_path / "_downloads" / "big.bin"
    dest.parent.mkdir()
    keep = 1_234_567
    # A server that ignores Range must not leave stale bytes in front: use a wrong prefix.
    (dest.parent / "big.bin.part").write_bytes(data[:keep] if honor_range else b"x" * keep)
    md5 = hashlib.md5(data).hexdigest()
    download(server.url("big.bin"), dest, md5=md5, size=len(data), progress=_quiet)
    assert dest.read_bytes() == data and not (dest.parent / "big.bin.part").exists()
    assert server.requests[0][1] == f"bytes={keep}-"
    assert len(server.requests) == 1
