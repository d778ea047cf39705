"""Vectorised 2-D drawing primitives for the procedurally generated `mini` domains.

Every function works on a batch of N images at once. Shape parameters are arrays of shape
(N,) and are broadcast against a coordinate grid of shape (S, S); images are float32 arrays of
shape (N, S, S, 3) with values in [0, 1]. Shapes are signed-distance functions (negative inside),
turned into soft masks so edges are anti-aliased without supersampling.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Canvas",
    "ellipse",
    "box",
    "polygon",
    "star",
    "rose",
    "triangle",
    "value_noise",
    "stripes",
    "checks",
    "dots",
    "hsv_to_rgb",
]

F = np.float32


def _col(a: np.ndarray | float) -> np.ndarray:
    """(N,) -> (N, 1, 1) so parameters broadcast against (S, S) grids."""
    return np.asarray(a, dtype=F).reshape(-1, 1, 1)


class Canvas:
    """A batch of N images of side S plus per-image object frames (centre, scale, rotation).

    ``frame`` sets the object coordinate system used by the shape functions: u runs along the
    object's main axis, v across it; one unit is half the image side times ``scale``.
    """

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size
        lin = (np.arange(size, dtype=F) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
        self.y, self.x = np.meshgrid(lin, lin, indexing="ij")  # (S, S) each
        self.img = np.zeros((n, size, size, 3), dtype=F)
        self.edge = F(2.0 / size)  # soft-edge width: about one pixel
        self.set_frame(np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n))

    def set_frame(self, cx, cy, scale, angle, flip=None) -> None:
        cx, cy, scale, angle = map(_col, (cx, cy, scale, angle))
        dx, dy = self.x[None] - cx, self.y[None] - cy
        cos, sin = np.cos(angle), np.sin(angle)
        self.u = (cos * dx + sin * dy) / scale
        self.v = (-sin * dx + cos * dy) / scale
        if flip is not None:
            self.u = np.where(_col(flip) > 0, -self.u, self.u)
        self.scale = scale

    def mask(self, sdf: np.ndarray) -> np.ndarray:
        """Soft mask (N, S, S) in [0, 1] from a signed distance in object units."""
        return 1.0 / (1.0 + np.exp(np.clip(sdf * self.scale / self.edge, -30, 30)))

    def fill(self, rgb: np.ndarray) -> None:
        """Paint the whole image; ``rgb`` is (N, 3) or (N, S, S, 3)."""
        rgb = np.asarray(rgb, dtype=F)
        self.img[...] = rgb if rgb.ndim == 4 else rgb[:, None, None, :]

    def paint(self, mask: np.ndarray, rgb: np.ndarray) -> None:
        """Alpha-blend ``rgb`` ((N, 3) or (N, S, S, 3)) where ``mask`` (N, S, S) is 1."""
        rgb = np.asarray(rgb, dtype=F)
        if rgb.ndim == 2:
            rgb = rgb[:, None, None, :]
        m = mask[..., None].astype(F)
        self.img *= 1 - m
        self.img += m * rgb

    def to_uint8(self) -> np.ndarray:
        return (np.clip(self.img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---- signed distance functions in object coordinates (u, v) ------------------------------


def ellipse(c: Canvas, cu, cv, a, b) -> np.ndarray:
    """Approximate SDF of an axis-aligned ellipse with semi-axes a (along u) and b (along v)."""
    a, b = _col(a), _col(b)
    du, dv = c.u - _col(cu), c.v - _col(cv)
    k = np.sqrt((du / a) ** 2 + (dv / b) ** 2)
    return (k - 1) * np.minimum(a, b)


def box(c: Canvas, cu, cv, w, h, radius=0.0) -> np.ndarray:
    """SDF of a rectangle of half-width w, half-height h, rounded by ``radius``."""
    r = _col(radius)
    qu = np.abs(c.u - _col(cu)) - _col(w) + r
    qv = np.abs(c.v - _col(cv)) - _col(h) + r
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0) - r


def _polar(c: Canvas, cu, cv) -> tuple[np.ndarray, np.ndarray]:
    du, dv = c.u - _col(cu), c.v - _col(cv)
    return np.sqrt(du**2 + dv**2), np.arctan2(dv, du)


def polygon(c: Canvas, cu, cv, radius, sides, rot=0.0) -> np.ndarray:
    """SDF (approximate) of a regular polygon with ``sides`` (N,) corners."""
    rho, th = _polar(c, cu, cv)
    n = _col(sides)
    sector = 2 * np.pi / n
    t = np.mod(th - _col(rot), sector) - sector / 2
    edge = _col(radius) * np.cos(np.pi / n) / np.cos(t)
    return (rho - edge) * np.cos(t)


def star(c: Canvas, cu, cv, r_out, r_in, points, rot=0.0) -> np.ndarray:
    """SDF (approximate) of a star whose radius oscillates between r_in and r_out."""
    rho, th = _polar(c, cu, cv)
    wave = 0.5 + 0.5 * np.cos(_col(points) * (th - _col(rot)))
    return rho - (_col(r_in) + (_col(r_out) - _col(r_in)) * wave)


def rose(c: Canvas, cu, cv, radius, petals, fullness, rot=0.0) -> np.ndarray:
    """SDF (approximate) of a flower: radius * (fullness + (1-fullness)|cos(petals*θ/2)|)."""
    rho, th = _polar(c, cu, cv)
    f = _col(fullness)
    wave = np.abs(np.cos(_col(petals) * (th - _col(rot)) / 2))
    return rho - _col(radius) * (f + (1 - f) * wave)


def triangle(c: Canvas, p0, p1, p2) -> np.ndarray:
    """SDF (approximate, exact inside) of the triangle with corners p_i = (u_i, v_i), each (N,)."""
    pts = [(_col(p[0]), _col(p[1])) for p in (p0, p1, p2)]
    d = None
    area = (pts[1][0] - pts[0][0]) * (pts[2][1] - pts[0][1]) - (pts[1][1] - pts[0][1]) * (
        pts[2][0] - pts[0][0]
    )
    orient = np.sign(area) + (area == 0)
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]):
        ex, ey = bx - ax, by - ay
        length = np.sqrt(ex**2 + ey**2) + 1e-6
        # Signed distance to the edge's line, positive outside (for either winding).
        side = orient * ((c.u - ax) * ey - (c.v - ay) * ex) / length
        d = side if d is None else np.maximum(d, side)
    return d


# ---- textures -----------------------------------------------------------------------------


def value_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1], shape (N, S, S): a random (cells+1)^2 lattice, bilinearly upsampled."""
    lattice = rng.random((n, cells + 1, cells + 1), dtype=F)
    pos = np.linspace(0, cells, size, dtype=F)
    i0 = np.minimum(pos.astype(int), cells - 1)
    t = pos - i0
    t = t * t * (3 - 2 * t)  # smoothstep so the lattice does not show
    rows = lattice[:, i0, :] * (1 - t)[None, :, None] + lattice[:, i0 + 1, :] * t[None, :, None]
    return rows[:, :, i0] * (1 - t)[None, None, :] + rows[:, :, i0 + 1] * t[None, None, :]


def stripes(c: Canvas, freq, angle, phase=0.0) -> np.ndarray:
    """Sinusoidal stripes in object coordinates, values in [0, 1], shape (N, S, S)."""
    a = _col(angle)
    w = c.u * np.cos(a) + c.v * np.sin(a)
    return 0.5 + 0.5 * np.sin(_col(freq) * np.pi * w + _col(phase))


def checks(c: Canvas, freq) -> np.ndarray:
    """Soft checkerboard in object coordinates, values in [0, 1]."""
    f = _col(freq) * np.pi
    return 0.5 + 0.5 * np.tanh(3 * np.sin(f * c.u) * np.sin(f * c.v))


def dots(c: Canvas, freq, radius) -> np.ndarray:
    """Polka dots in object coordinates, values in [0, 1] (1 inside a dot)."""
    f = _col(freq)
    du = np.mod(c.u * f, 1.0) - 0.5
    dv = np.mod(c.v * f, 1.0) - 0.5
    return c.mask((np.sqrt(du**2 + dv**2) - _col(radius)) / f)


def hsv_to_rgb(h, s, v) -> np.ndarray:
    """Vectorised HSV -> RGB; h, s, v broadcastable arrays in [0, 1]; returns (..., 3) float32."""
    h, s, v = (np.asarray(a, dtype=F) for a in np.broadcast_arrays(h, s, v))
    h = np.mod(h, 1.0) * 6
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]
