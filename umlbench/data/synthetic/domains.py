"""The nine procedurally generated image domains of the `mini` suite.

Each domain mirrors one real dataset: the objects, backgrounds, palettes and textures differ
between domains, while classes inside a domain differ only in a few continuous attributes
(fine-grained). A class is a draw of attributes (``sample_classes``); an image is that class
rendered under nuisance variation: position, scale, rotation, flip, lighting, background and
pixel noise (``render``). The ninth domain, ``pretrain``, is only used to pre-train the tiny ViT
backbone, so no evaluation class is ever seen by the backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from umlbench.data.synthetic import render as R

__all__ = ["Domain", "DOMAINS"]

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Domain:
    """``genus_mix``: classes are drawn as perturbations of a few "genus" prototypes (species
    = genus + genus_mix * (fresh draw - genus); discrete attributes are inherited with
    probability 1 - genus_mix), which makes classes inside a domain fine-grained, as species of
    one family are. None draws every class independently (the pre-training domain)."""

    name: str
    sample_classes: Callable[[np.random.Generator, int], Params]
    draw: Callable[[np.random.Generator, R.Canvas, Params], None]
    genus_mix: float | None = None
    classes_per_genus: int = 5

    def classes(self, rng: np.random.Generator, n: int) -> Params:
        """Attributes of ``n`` classes: {attribute: (n,) float32}."""
        if self.genus_mix is None:
            return self.sample_classes(rng, n)
        n_genera = max(2, n // self.classes_per_genus)
        genera = self.sample_classes(rng, n_genera)
        fresh = self.sample_classes(rng, n)
        which = rng.integers(0, n_genera, n)
        out = {}
        for key, g in genera.items():
            base, new = g[which], fresh[key]
            if np.all(g == np.round(g)):  # discrete attribute: mostly inherited
                out[key] = np.where(rng.random(n) < self.genus_mix, new, base)
            else:
                out[key] = (base + self.genus_mix * (new - base)).astype(np.float32)
        return out

    def render(self, rng: np.random.Generator, classes: Params, labels: np.ndarray, size: int):
        """Render one image per entry of ``labels`` (N,) -> uint8 array (N, size, size, 3)."""
        per_image = {k: v[labels] for k, v in classes.items()}
        canvas = R.Canvas(len(labels), size)
        self.draw(rng, canvas, per_image)
        _photometric(rng, canvas)
        return canvas.to_uint8()


# ---- shared nuisance ------------------------------------------------------------------------


def _frame(rng, c: R.Canvas, shift=0.15, scale=(0.85, 1.15), rot=20.0, flip=True) -> None:
    n = c.n
    c.set_frame(
        rng.uniform(-shift, shift, n),
        rng.uniform(-shift, shift, n),
        rng.uniform(*scale, n),
        np.deg2rad(rng.uniform(-rot, rot, n)),
        flip=(rng.random(n) < 0.5).astype(np.float32) if flip else None,
    )


def _photometric(rng, c: R.Canvas) -> None:
    n = c.n
    gain = rng.uniform(0.8, 1.15, (n, 1, 1, 1)).astype(np.float32)
    tint = rng.normal(0, 0.03, (n, 1, 1, 3)).astype(np.float32)
    c.img = c.img * gain + tint + rng.normal(0, 0.03, c.img.shape).astype(np.float32)


def _hsv(h, s, v, rng=None, jitter=(0.0, 0.0, 0.0)):
    """(N,) HSV arrays -> (N, 3) RGB, with optional per-image jitter."""
    if rng is not None:
        n = len(h)
        h = h + rng.normal(0, jitter[0], n)
        s = np.clip(s + rng.normal(0, jitter[1], n), 0, 1)
        v = np.clip(v + rng.normal(0, jitter[2], n), 0, 1)
    return R.hsv_to_rgb(h, s, v)


def _noisy_bg(rng, c: R.Canvas, rgb_a, rgb_b, cells: int) -> None:
    t = R.value_noise(rng, c.n, c.size, cells)[..., None]
    c.fill(rgb_a[:, None, None, :] * (1 - t) + rgb_b[:, None, None, :] * t)


def _u(rng, n, lo, hi):
    return rng.uniform(lo, hi, n).astype(np.float32)


# ---- birds (CUB-like on foliage, NABirds-like against the sky) ------------------------------


def _bird_classes(rng, n) -> Params:
    return {
        "body_h": _u(rng, n, 0, 1),
        "body_s": _u(rng, n, 0.35, 0.9),
        "body_v": _u(rng, n, 0.35, 0.95),
        "head_h": _u(rng, n, 0, 1),
        "wing_h": _u(rng, n, 0, 1),
        "wing_f": _u(rng, n, 0, 6),  # wing-bar frequency; 0 means plain wings
        "aspect": _u(rng, n, 0.38, 0.62),
        "beak": _u(rng, n, 0.12, 0.32),
        "tail": _u(rng, n, 0.15, 0.4),
    }


def _draw_bird(rng, c: R.Canvas, p: Params) -> None:
    n = c.n
    _frame(rng, c, shift=0.18, rot=25)
    tail = R.triangle(c, (-0.4, -0.05 * np.ones(n)), (-0.4 - p["tail"], -0.2 * np.ones(n)),
                      (-0.4 - p["tail"], 0.15 * np.ones(n)))
    body_rgb = _hsv(p["body_h"], p["body_s"], p["body_v"], rng, (0.015, 0.05, 0.05))
    c.paint(c.mask(tail), body_rgb * 0.7)
    body = R.ellipse(c, 0, 0, 0.55, 0.55 * p["aspect"] / 0.5)
    wing_rgb = _hsv(p["wing_h"], 0.6, 0.6, rng, (0.015, 0.05, 0.05))
    bars = R.stripes(c, p["wing_f"], np.pi / 2)[..., None]
    wing_tex = body_rgb[:, None, None] * (1 - 0.7 * bars) + wing_rgb[:, None, None] * 0.7 * bars
    c.paint(c.mask(body), wing_tex)
    head = R.ellipse(c, 0.5, -0.25, 0.22, 0.22)
    c.paint(c.mask(head), _hsv(p["head_h"], 0.7, 0.8, rng, (0.015, 0.05, 0.05)))
    beak = R.triangle(c, (0.68, -0.3 * np.ones(n)), (0.68, -0.18 * np.ones(n)),
                      (0.68 + p["beak"], -0.24 * np.ones(n)))
    c.paint(c.mask(beak), np.tile([[0.9, 0.75, 0.2]], (n, 1)))
    c.paint(c.mask(R.ellipse(c, 0.55, -0.3, 0.045, 0.045)), np.zeros((n, 3)))


def _draw_cub(rng, c, p) -> None:
    n = c.n
    leaf_a = _hsv(_u(rng, n, 0.18, 0.35), _u(rng, n, 0.4, 0.8), _u(rng, n, 0.2, 0.5))
    leaf_b = _hsv(_u(rng, n, 0.06, 0.14), _u(rng, n, 0.3, 0.7), _u(rng, n, 0.2, 0.5))
    _noisy_bg(rng, c, leaf_a, leaf_b, 5)
    _draw_bird(rng, c, p)


def _draw_nabirds(rng, c, p) -> None:
    n = c.n
    sky = _hsv(_u(rng, n, 0.52, 0.62), _u(rng, n, 0.3, 0.6), _u(rng, n, 0.75, 0.95))
    cloud = np.ones((n, 3), np.float32) * _u(rng, n, 0.85, 1.0)[:, None]
    _noisy_bg(rng, c, sky, cloud, 3)
    _draw_bird(rng, c, p)


# ---- cars -------------------------------------------------------------------------------------


def _car_classes(rng, n) -> Params:
    return {
        "h": _u(rng, n, 0, 1),
        "s": _u(rng, n, 0.0, 0.9),
        "v": _u(rng, n, 0.25, 0.95),
        "cabin": _u(rng, n, 0.25, 0.55),  # cabin half-length
        "cabin_off": _u(rng, n, -0.2, 0.15),
        "height": _u(rng, n, 0.13, 0.24),
        "wheel": _u(rng, n, 0.1, 0.17),
        "roof_h": _u(rng, n, 0, 1),
    }


def _draw_cars(rng, c, p) -> None:
    n = c.n
    horizon = _u(rng, n, 0.0, 0.35)[:, None, None]
    sky = _hsv(_u(rng, n, 0.5, 0.65), _u(rng, n, 0.1, 0.4), _u(rng, n, 0.6, 0.95))
    road = np.repeat(_u(rng, n, 0.25, 0.5)[:, None], 3, 1)
    ground = (c.y[None] > horizon)[..., None]
    c.fill(np.where(ground, road[:, None, None], sky[:, None, None]))
    _frame(rng, c, shift=0.12, scale=(0.9, 1.1), rot=6)
    body_rgb = _hsv(p["h"], p["s"], p["v"], rng, (0.01, 0.04, 0.05))
    body = R.box(c, 0, 0.1, 0.75, p["height"], 0.06)
    cabin = R.box(c, p["cabin_off"], 0.1 - p["height"] - 0.12, p["cabin"], 0.14, 0.08)
    c.paint(c.mask(np.minimum(body, cabin)), body_rgb)
    window = R.box(c, p["cabin_off"], 0.1 - p["height"] - 0.1, p["cabin"] - 0.06, 0.08, 0.03)
    c.paint(c.mask(window), _hsv(p["roof_h"], 0.25, 0.85))
    for wu in (-0.45, 0.45):
        wheel = R.ellipse(c, wu, 0.1 + p["height"], p["wheel"], p["wheel"])
        c.paint(c.mask(wheel), np.full((n, 3), 0.08, np.float32))
        hub = R.ellipse(c, wu, 0.1 + p["height"], p["wheel"] * 0.45, p["wheel"] * 0.45)
        c.paint(c.mask(hub), np.full((n, 3), 0.7, np.float32))


# ---- Stanford Online Products: isolated objects on white ---------------------------------------


def _product_classes(rng, n) -> Params:
    return {
        "sides": rng.integers(3, 9, n).astype(np.float32),
        "star": (rng.random(n) < 0.3).astype(np.float32),
        "h": _u(rng, n, 0, 1),
        "s": _u(rng, n, 0.2, 0.9),
        "v": _u(rng, n, 0.3, 0.9),
        "aspect": _u(rng, n, 0.6, 1.0),
        "mark": rng.integers(0, 3, n).astype(np.float32),
        "mark_h": _u(rng, n, 0, 1),
    }


def _draw_sop(rng, c, p) -> None:
    n = c.n
    c.fill(np.repeat(_u(rng, n, 0.85, 1.0)[:, None], 3, 1))
    _frame(rng, c, shift=0.1, scale=(0.8, 1.1), rot=35, flip=False)
    c.paint(c.mask(R.ellipse(c, 0.08, 0.55, 0.55, 0.12)), np.full((n, 3), 0.7, np.float32))
    c.v = c.v / p["aspect"][:, None, None]
    shape = np.where(
        p["star"][:, None, None] > 0,
        R.star(c, 0, 0, 0.62, 0.35, p["sides"]),
        R.polygon(c, 0, 0, 0.6, p["sides"]),
    )
    c.paint(c.mask(shape), _hsv(p["h"], p["s"], p["v"], rng, (0.01, 0.03, 0.04)))
    mark_rgb = _hsv(p["mark_h"], 0.8, 0.9)
    circle = c.mask(R.ellipse(c, 0, 0, 0.2, 0.2)) * (p["mark"] == 1)[:, None, None]
    bar = c.mask(R.box(c, 0, 0, 0.35, 0.07)) * (p["mark"] == 2)[:, None, None]
    c.paint(np.maximum(circle, bar), mark_rgb)


# ---- In-shop clothes ----------------------------------------------------------------------------


def _clothes_classes(rng, n) -> Params:
    return {
        "h": _u(rng, n, 0, 1),
        "s": _u(rng, n, 0.1, 0.9),
        "v": _u(rng, n, 0.3, 0.95),
        "pattern": rng.integers(0, 4, n).astype(np.float32),
        "pat_h": _u(rng, n, 0, 1),
        "freq": _u(rng, n, 2.5, 7),
        "sleeve": _u(rng, n, 0.1, 0.45),
        "length": _u(rng, n, 0.35, 0.75),
    }


def _draw_inshop(rng, c, p) -> None:
    n = c.n
    base = _u(rng, n, 0.75, 0.95)
    c.fill(np.stack([base, base * 0.97, base * 0.92], 1))
    _frame(rng, c, shift=0.08, scale=(0.85, 1.1), rot=10)
    c.paint(c.mask(R.ellipse(c, 0, -0.72, 0.16, 0.18)), np.tile([[0.85, 0.65, 0.5]], (n, 1)))
    torso = R.box(c, 0, -0.15 + p["length"] / 2, 0.32, 0.3 + p["length"] / 2, 0.05)
    arms = R.box(c, 0, -0.38, 0.32 + p["sleeve"] * 1.2, 0.1, 0.04)
    garment = c.mask(np.minimum(torso, arms))
    cloth = _hsv(p["h"], p["s"], p["v"], rng, (0.01, 0.04, 0.05))
    pat_rgb = _hsv(p["pat_h"], 0.7, 0.7)
    kind = p["pattern"][:, None, None]
    tex = np.where(kind == 1, R.stripes(c, p["freq"], 0.0), 0.0)
    tex = np.where(kind == 2, R.checks(c, p["freq"] / 2), tex)
    tex = np.where(kind == 3, R.dots(c, p["freq"] / 2, 0.22), tex)[..., None]
    c.paint(garment, cloth[:, None, None] * (1 - tex) + pat_rgb[:, None, None] * tex)


# ---- Stanford Dogs ------------------------------------------------------------------------------


def _dog_classes(rng, n) -> Params:
    return {
        "h": _u(rng, n, 0.02, 0.13),
        "s": _u(rng, n, 0.1, 0.8),
        "v": _u(rng, n, 0.2, 0.95),
        "spots": _u(rng, n, 0, 1),
        "ears": (rng.random(n) < 0.5).astype(np.float32),
        "snout": _u(rng, n, 0.1, 0.3),
        "aspect": _u(rng, n, 0.35, 0.6),
        "spot_v": _u(rng, n, 0.05, 0.95),
    }


def _draw_dogs(rng, c, p) -> None:
    n = c.n
    indoor = rng.random(n) < 0.5
    bg_a = np.where(indoor[:, None], _hsv(_u(rng, n, 0.05, 0.12), 0.3, 0.6),
                    _hsv(_u(rng, n, 0.22, 0.32), 0.6, 0.45))
    _noisy_bg(rng, c, bg_a, bg_a * 0.75, 4)
    _frame(rng, c, shift=0.15, rot=15)
    fur = _hsv(p["h"], p["s"], p["v"], rng, (0.01, 0.05, 0.05))
    spot = R.value_noise(rng, n, c.size, 6)
    spot_mask = (spot > 1 - 0.5 * p["spots"][:, None, None]).astype(np.float32)[..., None]
    spot_rgb = np.repeat(p["spot_v"][:, None], 3, 1)[:, None, None]
    tex = fur[:, None, None] * (1 - spot_mask) + spot_rgb * spot_mask
    body = R.ellipse(c, -0.1, 0.15, 0.55, 0.55 * p["aspect"] / 0.45)
    head = R.ellipse(c, 0.45, -0.2, 0.24, 0.22)
    snout = R.box(c, 0.62 + p["snout"] / 2, -0.12, p["snout"] / 2 + 0.05, 0.08, 0.05)
    c.paint(c.mask(np.minimum(np.minimum(body, head), snout)), tex)
    pointy = R.triangle(c, (0.32, -0.3 * np.ones(n)), (0.46, -0.35 * np.ones(n)),
                        (0.36, -0.62 * np.ones(n)))
    floppy = R.ellipse(c, 0.3, -0.2, 0.08, 0.22)
    ears = np.where(p["ears"][:, None, None] > 0, pointy, floppy)
    c.paint(c.mask(ears), fur * 0.6)
    c.paint(c.mask(R.ellipse(c, 0.52, -0.26, 0.04, 0.04)), np.zeros((n, 3)))


# ---- Oxford Flowers ----------------------------------------------------------------------------


def _flower_classes(rng, n) -> Params:
    return {
        "petals": rng.integers(3, 10, n).astype(np.float32),
        "h": _u(rng, n, 0, 1),
        "s": _u(rng, n, 0.4, 1.0),
        "v": _u(rng, n, 0.6, 1.0),
        "full": _u(rng, n, 0.0, 0.5),
        "center_h": _u(rng, n, 0.05, 0.2),
        "center_r": _u(rng, n, 0.1, 0.3),
        "ring": _u(rng, n, 0.0, 1.0),
    }


def _draw_flowers(rng, c, p) -> None:
    n = c.n
    leaf = _hsv(_u(rng, n, 0.22, 0.38), _u(rng, n, 0.5, 0.9), _u(rng, n, 0.15, 0.4))
    _noisy_bg(rng, c, leaf, leaf * 0.5, 6)
    _frame(rng, c, shift=0.12, scale=(0.75, 1.15), rot=180, flip=False)
    petal_rgb = _hsv(p["h"], p["s"], p["v"], rng, (0.01, 0.05, 0.05))
    c.paint(c.mask(R.rose(c, 0, 0, 0.8, p["petals"], p["full"])), petal_rgb)
    inner = R.rose(c, 0, 0, 0.5, p["petals"], p["full"], rot=np.pi / p["petals"])
    c.paint(c.mask(inner) * p["ring"][:, None, None], petal_rgb * 0.6)
    center = R.ellipse(c, 0, 0, p["center_r"], p["center_r"])
    c.paint(c.mask(center), _hsv(p["center_h"], 0.9, 0.7))


# ---- FGVC-Aircraft -------------------------------------------------------------------------------


def _aircraft_classes(rng, n) -> Params:
    return {
        "sweep": _u(rng, n, -0.1, 0.45),
        "span": _u(rng, n, 0.45, 0.8),
        "wing_pos": _u(rng, n, -0.15, 0.2),
        "tail": _u(rng, n, 0.15, 0.35),
        "length": _u(rng, n, 0.7, 0.95),
        "h": _u(rng, n, 0, 1),
        "s": _u(rng, n, 0.0, 0.8),
        "engines": rng.integers(0, 3, n).astype(np.float32),
        "wing_v": _u(rng, n, 0.3, 0.65),
    }


def _draw_aircraft(rng, c, p) -> None:
    n = c.n
    top = _hsv(_u(rng, n, 0.55, 0.62), _u(rng, n, 0.3, 0.7), _u(rng, n, 0.6, 0.9))
    bottom = _hsv(_u(rng, n, 0.55, 0.62), _u(rng, n, 0.1, 0.3), _u(rng, n, 0.8, 1.0))
    t = ((c.y[None] + 1) / 2)[..., None]
    c.fill(top[:, None, None] * (1 - t) + bottom[:, None, None] * t)
    _frame(rng, c, shift=0.1, scale=(0.85, 1.1), rot=30)
    livery = _hsv(p["h"], p["s"], np.full(n, 0.9), rng, (0.01, 0.04, 0.04))
    grey = np.repeat(p["wing_v"][:, None], 3, 1)
    w0 = p["wing_pos"]
    for side in (-1.0, 1.0):
        wing = R.triangle(c, (w0 + 0.12, np.zeros(n)), (w0 - 0.12, np.zeros(n)),
                          (w0 - p["sweep"], side * p["span"]))
        c.paint(c.mask(wing), grey)
        stab = R.triangle(c, (-p["length"] + 0.15, np.zeros(n)), (-p["length"], np.zeros(n)),
                          (-p["length"] - p["sweep"] * 0.4, side * p["tail"]))
        c.paint(c.mask(stab), grey)
        for k, frac in ((1, 0.45), (2, 0.75)):
            on = (p["engines"] >= k)[:, None, None]
            eng = R.ellipse(c, w0 - p["sweep"] * frac + 0.05, side * p["span"] * frac, 0.08, 0.04)
            c.paint(c.mask(eng) * on, np.full((n, 3), 0.3, np.float32))
    body = R.ellipse(c, 0, 0, p["length"], 0.13)
    c.paint(c.mask(body), livery)
    stripe = c.mask(R.box(c, 0, 0, p["length"] * 0.8, 0.035))
    c.paint(stripe, livery * 0.4)


# ---- the pre-training domain: abstract glyphs ----------------------------------------------------


def _glyph_classes(rng, n) -> Params:
    return {
        "kind": rng.integers(0, 5, n).astype(np.float32),
        "k": rng.integers(3, 9, n).astype(np.float32),
        "aspect": _u(rng, n, 0.4, 1.0),
        "h": _u(rng, n, 0, 1),
        "s": _u(rng, n, 0.0, 1.0),
        "v": _u(rng, n, 0.2, 1.0),
        "tex": rng.integers(0, 4, n).astype(np.float32),
        "tex_h": _u(rng, n, 0, 1),
        "freq": _u(rng, n, 2, 8),
        "bg_h": _u(rng, n, 0, 1),
        "bg_v": _u(rng, n, 0.1, 0.9),
    }


def _draw_pretrain(rng, c, p) -> None:
    n = c.n
    bg = _hsv(p["bg_h"] + rng.normal(0, 0.05, n), _u(rng, n, 0.1, 0.6), p["bg_v"])
    _noisy_bg(rng, c, bg, bg * _u(rng, n, 0.5, 1.0)[:, None], int(rng.integers(2, 7)))
    _frame(rng, c, shift=0.2, scale=(0.7, 1.2), rot=45)
    c.v = c.v / p["aspect"][:, None, None]
    kind = p["kind"][:, None, None]
    sdf = R.ellipse(c, 0, 0, 0.6, 0.6)
    sdf = np.where(kind == 1, R.polygon(c, 0, 0, 0.65, p["k"]), sdf)
    sdf = np.where(kind == 2, R.star(c, 0, 0, 0.7, 0.35, p["k"]), sdf)
    sdf = np.where(kind == 3, R.rose(c, 0, 0, 0.7, p["k"], 0.3), sdf)
    sdf = np.where(kind == 4, R.box(c, 0, 0, 0.6, 0.35, 0.05), sdf)
    fg = _hsv(p["h"], p["s"], p["v"], rng, (0.02, 0.05, 0.05))
    tk = p["tex"][:, None, None]
    tex = np.where(tk == 1, R.stripes(c, p["freq"], 0.5), 0.0)
    tex = np.where(tk == 2, R.checks(c, p["freq"] / 2), tex)
    tex = np.where(tk == 3, R.dots(c, p["freq"] / 2, 0.25), tex)[..., None]
    tex_rgb = _hsv(p["tex_h"], 0.7, 0.8)
    c.paint(c.mask(sdf), fg[:, None, None] * (1 - tex) + tex_rgb[:, None, None] * tex)


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("cub", _bird_classes, _draw_cub, genus_mix=0.3),
        Domain("cars", _car_classes, _draw_cars, genus_mix=0.4),
        Domain("sop", _product_classes, _draw_sop, genus_mix=0.5),
        Domain("inshop", _clothes_classes, _draw_inshop, genus_mix=0.5),
        Domain("nabirds", _bird_classes, _draw_nabirds, genus_mix=0.3),
        Domain("dogs", _dog_classes, _draw_dogs, genus_mix=0.35),
        Domain("flowers", _flower_classes, _draw_flowers, genus_mix=0.25),
        Domain("aircraft", _aircraft_classes, _draw_aircraft, genus_mix=0.25),
        Domain("pretrain", _glyph_classes, _draw_pretrain),
    )
}
