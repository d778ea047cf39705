"""The packed image store: original files unchanged, decoded as the official PIL pipeline does.

The reference for every pixel is the official PUMA pipeline: ``PIL.Image.open(path)
.convert("RGB")`` then torchvision's ``RandomResizedCrop(224, scale=(0.2, 1), bicubic)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize(0.5, 0.5)`` (utils.MultiTransforms).
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as TV

from tests.data.fixtures import FIXTURES, write_photo
from umlbench import const as C
from umlbench.data.loading import ImageTable, TransformConfig, build_transform, collate
from umlbench.data.pack import decode, turbo_decodable
from umlbench.data.prepare import load_prepared, prepare_one
from umlbench.data.registry import DATASETS
from umlbench.errors import DataError

KINDS = ("rgb", "gray", "cmyk", "png")


def _quiet(*args) -> None:
    pass


def _encoded(kind: str, seed: int = 0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if kind == "png":
        im.save(buf, format="PNG")
    else:
        im.convert({"rgb": "RGB", "gray": "L", "cmyk": "CMYK"}[kind]).save(buf, format="JPEG",
                                                                           **save)
    return buf.getvalue()


def _pil_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("kind, save, turbo", [
    ("rgb", {}, True), ("rgb", {"progressive": True}, True), ("rgb", {"subsampling": 0}, True),
    # 160 KB of EXIF and ICC segments before the frame header
    ("rgb", {"exif": b"Exif\x00\x00" + bytes(60_000), "icc_profile": bytes(100_000)}, True),
    ("gray", {}, True), ("cmyk", {}, False), ("png", {}, False)])
def test_decode_gives_pil_pixels(kind, save, turbo):
    data = _encoded(kind, **save)
    assert turbo_decodable(data) is turbo
    img = decode(data)
    assert img.dtype == torch.uint8 and img.shape == (3, 48, 64)
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), _pil_rgb(data))


def test_frame_header_walk_rejects_what_it_cannot_read():
    assert not turbo_decodable(b"")
    assert not turbo_decodable(b"\xff\xd8")
    assert not turbo_decodable(b"\xff\xd8\xff\xda\x00\x02")  # a scan before any frame
    assert not turbo_decodable(b"GIF89a" + bytes(20))
    rgb = _encoded("rgb")
    frame = rgb.index(b"\xff\xc0")
    arith = rgb[:frame] + b"\xff\xc9" + rgb[frame + 2:]  # arithmetic coding: leave it to PIL
    assert turbo_decodable(rgb) and not turbo_decodable(arith)


@pytest.mark.parametrize("cut", ["truncated", "garbage"])
def test_broken_image_is_a_one_line_data_error(cut):
    data = _encoded("rgb")
    bad = data[: len(data) // 2] if cut == "truncated" else b"\xff\xd8 not a jpeg at all"
    with pytest.raises(DataError, match=r"x/y\.jpg: cannot decode image") as err:
        decode(bad, "x/y.jpg")
    assert "\n" not in str(err.value) and ".cpp" not in str(err.value)


@pytest.fixture(scope="module")
def dogs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dogs")
    fx = FIXTURES["dogs"](d / "fx")
    spec = dataclasses.replace(DATASETS.get("dogs"), expected=fx.expected)
    prepare_one(spec, d / "root", source=str(fx.source), workers=1, progress=_quiet)
    return load_prepared(d / "root", "dogs")


def test_real_dataset_default_is_the_pack_of_unchanged_files(dogs):
    p = dogs
    assert p.image_source == C.PACKED and p.image_size is None
    ready = json.loads((p.path / C.READY_FILE).read_text())
    assert ready["image_source"] == "packed" and ready["image_size"] is None
    assert set(ready["sha256"]) == {C.MANIFEST_FILE, C.PACK_FILE}
    assert not (p.path / C.CACHE_FILE).exists()
    # The fixture's PNG and CMYK files named .jpg go to PIL; the grey JPEG stays on libjpeg-turbo.
    assert ready["pil_decoded"] == 2 and len(ready["pil_decoded_examples"]) == 2
    m = p.manifest
    for i, r in m.iterrows():
        original = (p.raw_dir / r[C.PATH]).read_bytes()
        assert bytes(p.pack.get(r[C.OFFSET], r[C.NBYTES])) == original  # no re-encode
        with Image.open(p.raw_dir / r[C.PATH]) as im:
            assert (r[C.WIDTH], r[C.HEIGHT]) == im.size  # full resolution
        np.testing.assert_array_equal(p.load_image(i), _pil_rgb(original))


def test_resized_cache_is_the_explicit_speed_option(tmp_path):
    fx = FIXTURES["flowers"](tmp_path / "fx")
    spec = dataclasses.replace(DATASETS.get("flowers"), expected=fx.expected)
    prepare_one(spec, tmp_path, source=str(fx.source), image_source="resized", image_size=20,
                workers=1, progress=_quiet)
    p = load_prepared(tmp_path, "flowers")
    assert p.image_source == C.RESIZED and p.image_size == 20 and p.pack is None
    assert (p.manifest[C.NBYTES] == 0).all() and min(p.load_image(0).shape[:2]) == 20


# ---- the training batch against the official PIL pipeline ----------------------------------

N_PHOTOS = 8  # 640x480 photos; two of them are a CMYK JPEG and a PNG named .jpg


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A Flowers-layout dataset whose images are 640x480 textured photos (odd kinds included),
    prepared twice: packed (default) and as the 256-px resized cache."""
    d = tmp_path_factory.mktemp("photos")
    fx = FIXTURES["flowers"](d / "fx")
    raw = d / "raw"
    from umlbench.data.download import extract

    for name, path in fx.files.items():
        if name.endswith(".tgz"):
            extract(path, raw)
        else:
            (raw / name).write_bytes(path.read_bytes())
    kinds = {3: "cmyk", 6: "png", 7: "gray"}
    for i in range(1, len(fx.labels) + 1):
        write_photo(raw / "jpg" / f"image_{i:05d}.jpg", 900 + i, (640, 480), kinds.get(i, "rgb"))
    spec = dataclasses.replace(DATASETS.get("flowers"), expected=fx.expected)
    out = {}
    for kind, size in (("packed", None), ("resized", 256)):
        prepare_one(spec, d / kind, source=str(raw), image_source=kind, image_size=size,
                    workers=1, progress=_quiet)
        out[kind] = load_prepared(d / kind, "flowers")
    return out


def _official_batch(paths, seeds) -> torch.Tensor:
    """The official training transform on PIL images, each drawn from torch seed ``seed``."""
    tf = TV.Compose([
        TV.RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=TV.InterpolationMode.BICUBIC),
        TV.RandomHorizontalFlip(), TV.ToTensor(), TV.Normalize((0.5,) * 3, (0.5,) * 3)])
    out = []
    for path, seed in zip(paths, seeds):
        torch.manual_seed(seed)
        with Image.open(path) as im:
            out.append(tf(im.convert("RGB")))
    return torch.stack(out)


def _our_batch(prep, seeds) -> torch.Tensor:
    m = prep.manifest
    rows = pd.DataFrame({"source": 0, "row": np.arange(len(m)), "target": m[C.LABEL]})
    cfg = TransformConfig(224, (0.5,) * 3, (0.5,) * 3, "bicubic", (0.2, 1.0))
    table = ImageTable([prep], rows, build_transform(cfg, train=True))
    # The trainer's samplers yield (index, seed) pairs: each crop is drawn from its own seed.
    loader = DataLoader(table, batch_sampler=[list(zip(range(len(m)), seeds))],
                        collate_fn=collate)
    return next(iter(loader))[0]


def test_training_batch_matches_the_official_pil_pipeline(photos):
    packed = photos["packed"]
    m = packed.manifest
    paths = [packed.raw_dir / p for p in m[C.PATH]]
    seeds = [1000 + 7 * i for i in range(len(m))]
    ref = _official_batch(paths, seeds)
    # Normalised values are (x - 0.5) / 0.5 with x in [0, 1]: one intensity level is 2/255.
    levels = lambda a, b: float((a - b).abs().mean() * 255 / 2)
    ours = _our_batch(packed, seeds)
    assert ours.shape == ref.shape == (len(m), 3, 224, 224)
    assert levels(ours, ref) < 1.0
    assert max(levels(o, r) for o, r in zip(ours, ref)) < 1.0  # every image, odd kinds included
    # Control: the 256-px resized cache does not give the official batch (its crop boxes are
    # drawn on the smaller image, and its pixels are resampled twice).
    assert levels(_our_batch(photos["resized"], seeds), ref) > 3.0


def test_cli_prepares_packed_by_default_and_says_so(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from umlbench.cli import cli
    from umlbench.data import prepare

    fx = FIXTURES["flowers"](tmp_path / "fx")
    # The fixture is not the full dataset: check its own counts instead of the official ones.
    check = prepare._check_expected
    monkeypatch.setattr(prepare, "_check_expected",
                        lambda spec, counts, src: check(dataclasses.replace(
                            spec, expected=fx.expected), counts, src))
    runner = CliRunner()
    args = ["prepare-data", "--dataset", "flowers", "--source", str(fx.source), "--workers", "1",
            "--data-root", str(tmp_path / "root")]
    text = lambda res: " ".join(res.output.split())  # rich wraps at 80 columns
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "images packed, full resolution" in text(res)
    assert load_prepared(tmp_path / "root", "flowers").image_source == "packed"
    # `umlbench info` names the image source at the start of its "source" column.
    from umlbench.data.info import dataset_status

    row = next(r for r in dataset_status(tmp_path / "root", "uml") if r[0] == "flowers")
    assert row[1] == "yes" and row[-1] == f"packed: {fx.source.resolve()}"
    res = runner.invoke(cli, args + ["--cache", "resized", "--no-cache"])
    assert res.exit_code == 2 and "either --cache or --no-cache" in res.output
    res = runner.invoke(cli, ["prepare-data", "--suite", "mini", "--cache", "packed",
                              "--data-root", str(tmp_path / "mini")])
    assert res.exit_code == 2 and "apply to real datasets" in res.output
    res = runner.invoke(cli, args + ["--cache", "resized"])  # already prepared: says so
    assert res.exit_code == 0 and "already prepared" in text(res)
    assert "images packed, full resolution; --force rebuilds it as resized" in text(res)
    res = runner.invoke(cli, args + ["--force", "--image-size", "24"])
    assert res.exit_code == 0 and "resized, shorter side 24 px" in text(res)
    row = next(r for r in dataset_status(tmp_path / "root", "uml") if r[0] == "flowers")
    assert row[-1] == f"resized 24: {fx.source.resolve()}"


def test_killed_while_packing_leaves_nothing_usable_and_a_rerun_finishes(tmp_path, monkeypatch):
    from umlbench.data.pack import PackWriter
    from umlbench.data.prepare import is_ready, sha256_file

    fx = FIXTURES["dogs"](tmp_path / "fx")
    spec = dataclasses.replace(DATASETS.get("dogs"), expected=fx.expected)
    append, calls = PackWriter.append, []

    def crash_after_three(self, data):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return append(self, data)

    monkeypatch.setattr(PackWriter, "append", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare_one(spec, tmp_path / "a", source=str(fx.source), workers=1, progress=_quiet)
    assert not is_ready(tmp_path / "a", "dogs") and not (tmp_path / "a" / "dogs").exists()
    monkeypatch.setattr(PackWriter, "append", append)
    prepare_one(spec, tmp_path / "a", source=str(fx.source), workers=1, progress=_quiet)
    # The worker pool (decoding in 2 processes) writes the very same pack and manifest.
    prepare_one(spec, tmp_path / "b", source=str(fx.source), workers=2, progress=_quiet)
    for f in (C.PACK_FILE, C.MANIFEST_FILE):
        a, b = tmp_path / "a" / "dogs" / f, tmp_path / "b" / "dogs" / f
        assert sha256_file(a) == sha256_file(b)
        assert json.loads((tmp_path / "a" / "dogs" / C.READY_FILE).read_text())["sha256"][f] \
            == sha256_file(a)
