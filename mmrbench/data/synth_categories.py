"""The product categories of the synthetic benchmark: how each normal sample is drawn and which
defects it can carry.

Textures are random windows of a per-category tile (so texture phase varies while the material
stays the same); objects are drawn in a canonical pose and then rotated/shifted. Every category
returns the image plus a :class:`~mmrbench.data.synth_draw.Ctx` telling the defect painters where
the product and its parts are.

Why over 400 lines: one drawing function per category (16 of them) plus the table that names them;
each is short and independent, and splitting the table across files would make the benchmark's
definition harder to read in one place (the generator's version must change with any edit here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from mmrbench.data import synth_draw as d
from mmrbench.data.synth_draw import SIZE, Ctx

S = SIZE
TILE = 384


@dataclass(frozen=True)
class Category:
    name: str
    subdataset: str
    kind: str  # "texture" | "object"
    draw: Callable  # (rng, tile) -> (img, ctx)
    anomalies: tuple[str, ...]
    make_tile: Callable | None = None  # (rng) -> tile, once per category
    painters: dict = field(default_factory=dict)  # type -> painter overriding synth_draw.PAINTERS

    def painter(self, kind: str):
        return self.painters.get(kind) or d.PAINTERS[kind]


def _full(_img=None):
    return np.ones((S, S), bool)


def _aa_fill(canvas, pts, color):
    cv2.fillPoly(canvas, [np.round(np.asarray(pts, np.float32) * 16).astype(np.int32)], color, cv2.LINE_AA, 4)


def _circle(canvas, c, r, color, thickness=-1):
    cv2.circle(canvas, (int(round(c[0] * 16)), int(round(c[1] * 16))), int(round(r * 16)), color, thickness, cv2.LINE_AA, 4)


_CANON: dict = {}


def _fixed(fn):
    """Cache a canonical drawing that does not depend on the rng (drawn once per process; callers
    only read it: posing warps into new arrays)."""
    def wrapper(rng):
        if fn.__name__ not in _CANON:
            _CANON[fn.__name__] = fn(None)
        return _CANON[fn.__name__]
    wrapper.__name__ = fn.__name__
    return wrapper


def _posed(rng, draw_canonical, bg_color, angle_range, shift, grain=0.05):
    """Draw an object in canonical pose (img, region, parts) then rotate/shift it onto a backdrop."""
    obj, alpha, parts = draw_canonical(rng)
    ang = float(rng.uniform(*angle_range))
    m = d.pose_matrix(ang, float(rng.uniform(-shift, shift)), float(rng.uniform(-shift, shift)))
    obj = d.warp(obj, m)
    alpha = d.warp(alpha, m)
    bg = d.background(rng, bg_color, grain)
    img = bg.copy()
    d.composite(img, obj, alpha)
    region = alpha > 0.5
    if parts is not None:
        parts = d.warp(parts.astype(np.float32), m, nearest=True).astype(np.int32)
    return img, Ctx(region=region, bg=bg, parts=parts)


# ----------------------------------------------------------------------------- textures

def tile_carpet(rng):
    n1 = d.smooth_noise(rng, TILE, TILE, 1.2)
    n2 = d.smooth_noise(rng, TILE, TILE, 7)
    yy, xx = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    weave = np.sin(xx * 2 * math.pi / 5) * np.sin(yy * 2 * math.pi / 5)
    v = 0.55 + 0.35 * (n1 - 0.5) + 0.35 * (n2 - 0.5) + 0.07 * weave
    return d.tint(v, (0.62, 0.5, 0.42))


def tile_wood(rng):
    yy, xx = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    warp = (d.smooth_noise(rng, TILE, TILE, 25) - 0.5) * 40
    rings = 0.5 + 0.5 * np.sin((xx + warp) * 2 * math.pi / 22 + 0.6 * np.sin(yy / 45))
    grain = cv2.GaussianBlur(rng.standard_normal((TILE, TILE)).astype(np.float32), (1, 0), sigmaX=0.6, sigmaY=9)
    v = 0.65 + 0.25 * rings + 0.06 * grain
    return d.tint(v, (0.72, 0.5, 0.3))


def tile_foam(rng):
    img = np.full((TILE, TILE), 0.8, np.float32)
    n = 900
    xs, ys = rng.uniform(0, TILE, n), rng.uniform(0, TILE, n)
    rs = rng.uniform(1.5, 5, n)
    for x, y, r in zip(xs, ys, rs):
        _circle(img, (x, y), r, 0.45)
    img = cv2.GaussianBlur(img, (0, 0), 0.9)
    img += 0.06 * (d.smooth_noise(rng, TILE, TILE, 3) - 0.5)
    return d.tint(img, (0.95, 0.93, 0.85))


def tile_fabric(rng):
    yy, xx = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    p = 8
    cell = ((xx // p + yy // p) % 2).astype(bool)
    horiz = np.sin(math.pi * (yy % p) / p)
    vert = np.sin(math.pi * (xx % p) / p)
    v = np.where(cell, horiz, vert) * 0.35 + 0.5
    v += 0.08 * (d.smooth_noise(rng, TILE, TILE, 1.0) - 0.5)
    return d.tint(v, (0.35, 0.45, 0.85))


def tile_tile(rng):
    v = 0.78 + 0.08 * (d.smooth_noise(rng, TILE, TILE, 1.0) - 0.5) + 0.1 * (d.smooth_noise(rng, TILE, TILE, 12) - 0.5)
    speck = rng.random((TILE, TILE)) < 0.01
    v[speck] -= 0.3
    grout = np.zeros((TILE, TILE), bool)
    for k in range(0, TILE, 64):
        grout[k:k + 4, :] = True
        grout[:, k:k + 4] = True
    v[grout] = 0.45
    return d.tint(cv2.GaussianBlur(v, (0, 0), 0.6), (0.95, 0.93, 0.9))


def _texture(tile_fn):
    def draw(rng, tile):
        return d.random_crop(tile, rng), Ctx(region=_full())
    return draw


def draw_metal_plate(rng, tile):
    img = d.random_crop(tile, rng)
    region = np.ones((S, S), bool)
    jx, jy = rng.uniform(-5, 5, 2)
    for cx, cy in ((34, 34), (222, 34), (34, 222), (222, 222)):
        c = (cx + jx, cy + jy)
        a = np.zeros((S, S), np.float32)
        _circle(a, c, 14, 1.0)
        d.composite(img, np.asarray((0.92, 0.92, 0.94), np.float32), a)
        a2 = np.zeros((S, S), np.float32)
        _circle(a2, c, 10, 1.0)
        d.composite(img, np.asarray((0.05, 0.05, 0.06), np.float32), a2)
        region &= a < 0.05
    return img, Ctx(region=region)


def tile_metal(rng):
    n = rng.standard_normal((TILE, TILE)).astype(np.float32)
    brushed = cv2.GaussianBlur(n, (0, 0), sigmaX=25, sigmaY=0.7)
    v = 0.62 + 0.5 * brushed + 0.08 * (d.smooth_noise(rng, TILE, TILE, 30) - 0.5)
    return d.tint(v, (0.88, 0.9, 0.95))


# ----------------------------------------------------------------------------- objects

CABLE_COLORS = [(0.45, 0.7, 0.2), (0.2, 0.35, 0.8), (0.55, 0.32, 0.15)]


@_fixed
def _cable_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    parts = np.zeros((S, S), np.float32)
    c = (S / 2, S / 2)
    _circle(alpha, c, 104, 1.0)
    _circle(obj, c, 104, (0.78, 0.78, 0.74))
    _circle(obj, c, 92, (0.62, 0.62, 0.6))
    for i, col in enumerate(CABLE_COLORS):
        a = math.radians(90 + 120 * i)
        p = (c[0] + 49 * math.cos(a), c[1] - 49 * math.sin(a))
        _circle(obj, p, 38, col)
        _circle(parts, p, 38.5, float(i + 1))
        _circle(obj, p, 22, (0.85, 0.55, 0.3))
        for k in range(7):  # copper strands
            sa = 2 * math.pi * k / 7
            _circle(obj, (p[0] + 11 * math.cos(sa), p[1] + 11 * math.sin(sa)), 6, (0.72, 0.42, 0.2), 1)
    obj *= d.shade_disk(S, S, *c, 104)[..., None]
    return obj, alpha, parts


def draw_cable(rng, tile):
    img, ctx = _posed(rng, _cable_canon, (0.12, 0.12, 0.13), (-20, 20), 8)

    def fill(im, m, r):
        im[m] = np.asarray((0.55, 0.55, 0.52), np.float32) * float(r.uniform(0.9, 1.0))
    ctx.part_fill = fill
    return img, ctx


def paint_swap_conductors(img, ctx, rng):
    """Two conductors' insulation colours exchanged (MVTec's cable_swap)."""
    ids = [int(i) for i in np.unique(ctx.parts) if i > 0]
    if len(ids) < 3:
        return None
    a, b = (int(v) for v in rng.choice(ids, 2, replace=False))
    ma, mb = ctx.parts == a, ctx.parts == b
    mask = ((ma | mb) * 255).astype(np.uint8)
    if d._finish(mask, ctx) is None:
        return None
    ca, cb = np.asarray(CABLE_COLORS[a - 1], np.float32), np.asarray(CABLE_COLORS[b - 1], np.float32)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    for m, src, dst in ((ma, ca, cb), (mb, cb, ca)):
        ys, xs = np.nonzero(m)
        # only the insulation ring changes colour: the copper core (r < 22) stays copper
        m = m & ((yy - ys.mean()) ** 2 + (xx - xs.mean()) ** 2 > 20.5 ** 2)
        px = img[m]
        near = np.abs(px / np.maximum(px.sum(1, keepdims=True), 1e-3) - src / src.sum()).sum(1) < 0.12
        px[near] = px[near] * (dst / np.maximum(src, 1e-3))
        img[m] = np.clip(px, 0, 1)
    return mask


@_fixed
def _screw_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    x0, x1, cy = 70.0, 196.0, S / 2
    body = [(x0, cy - 11), (x1 - 18, cy - 11), (x1, cy), (x1 - 18, cy + 11), (x0, cy + 11)]
    for canvas, col in ((alpha, 1.0), (obj, (0.42, 0.42, 0.45))):
        _aa_fill(canvas, body, col)
        _circle(canvas, (x0 - 8, cy), 22, col)
    for x in np.arange(x0 + 8, x1 - 14, 6.0):  # threads
        cv2.line(obj, (int(x * 16), int((cy - 11) * 16)), (int((x + 3) * 16), int((cy + 11) * 16)),
                 (0.62, 0.62, 0.66), 2, cv2.LINE_AA, 4)
    cv2.line(obj, (int((x0 - 8) * 16), int((cy - 15) * 16)), (int((x0 - 8) * 16), int((cy + 15) * 16)),
             (0.15, 0.15, 0.17), 5, cv2.LINE_AA, 4)
    obj *= d.shade_disk(S, S, S / 2, S / 2, 90)[..., None]
    return obj, alpha, None


def draw_screw(rng, tile):
    # screws lie in any direction on a real line; +-40 degrees keeps the category learnable from a
    # couple of dozen normals by full-shot detectors with random-weight features
    return _posed(rng, _screw_canon, (0.86, 0.86, 0.84), (-40, 40), 22)


@_fixed
def _capsule_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    cy, L, W = S / 2, 150.0, 56.0
    x0, x1 = S / 2 - L / 2, S / 2 + L / 2
    for canvas, col in ((alpha, 1.0), (obj, (0.93, 0.92, 0.88))):
        _aa_fill(canvas, [(x0 + W / 2, cy - W / 2), (x1 - W / 2, cy - W / 2), (x1 - W / 2, cy + W / 2), (x0 + W / 2, cy + W / 2)], col)
        _circle(canvas, (x0 + W / 2, cy), W / 2, col)
        _circle(canvas, (x1 - W / 2, cy), W / 2, col)
    left = np.zeros((S, S), np.float32)
    _aa_fill(left, [(0, 0), (S / 2 + 4, 0), (S / 2 + 4, S), (0, S)], 1.0)
    d.composite(obj, np.asarray((0.78, 0.2, 0.18), np.float32), left * alpha)
    for k in range(3):  # printed marks on the white half
        x = S / 2 + 22 + 12 * k
        cv2.line(obj, (int(x * 16), int((cy - 8) * 16)), (int((x + 6) * 16), int((cy + 8) * 16)), (0.2, 0.2, 0.25), 2, cv2.LINE_AA, 4)
    yy = np.mgrid[0:S, 0:S][0].astype(np.float32)
    obj *= np.clip(1.1 - 0.35 * ((yy - cy) / (W / 2)) ** 2, 0.6, 1.1)[..., None]
    return obj, alpha, None


def draw_capsule(rng, tile):
    return _posed(rng, _capsule_canon, (0.2, 0.2, 0.22), (-12, 12), 16)


def _pill_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    c = (S / 2, S / 2)
    for canvas, col in ((alpha, 1.0), (obj, (0.9, 0.88, 0.84))):
        cv2.ellipse(canvas, (int(c[0] * 16), int(c[1] * 16)), (int(92 * 16), int(58 * 16)), 0, 0, 360, col, -1, cv2.LINE_AA, 4)
    n = int(rng.integers(25, 45))
    for _ in range(n):  # red speckles vary from pill to pill
        a, rr = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1))
        _circle(obj, (c[0] + 80 * rr * math.cos(a), c[1] + 48 * rr * math.sin(a)), float(rng.uniform(1, 2.2)), (0.72, 0.25, 0.2))
    cv2.line(obj, (int(c[0] * 16), int((c[1] - 50) * 16)), (int(c[0] * 16), int((c[1] + 50) * 16)), (0.72, 0.7, 0.66), 3, cv2.LINE_AA, 4)
    obj *= d.shade_disk(S, S, *c, 92)[..., None]
    return obj, alpha, None


def draw_pill(rng, tile):
    return _posed(rng, _pill_canon, (0.08, 0.1, 0.16), (-8, 8), 14)


def _pcb_layout():
    # fixed layout: (kind, x, y, w, h); parts numbered in this order
    return [
        ("ic", 70, 70, 60, 44), ("res", 160, 58, 34, 12), ("res", 160, 92, 34, 12), ("res", 60, 160, 12, 34),
        ("cap", 150, 160, 18, 18), ("cap", 200, 170, 14, 14), ("led", 100, 190, 20, 12),
    ]


def _draw_pcb_part(obj, parts, kind, x, y, w, h, pid):
    if kind == "ic":
        _aa_fill(obj, [(x - w / 2, y - h / 2), (x + w / 2, y - h / 2), (x + w / 2, y + h / 2), (x - w / 2, y + h / 2)], (0.08, 0.08, 0.09))
        for k in range(6):
            px = x - w / 2 + 6 + k * (w - 12) / 5
            for sy in (-1, 1):
                _aa_fill(obj, [(px - 2, y + sy * h / 2), (px + 2, y + sy * h / 2), (px + 2, y + sy * (h / 2 + 6)), (px - 2, y + sy * (h / 2 + 6))], (0.8, 0.8, 0.82))
        _circle(obj, (x - w / 2 + 7, y - h / 2 + 7), 3, (0.3, 0.3, 0.32))
        ext = 7
    elif kind == "res":
        _aa_fill(obj, [(x - w / 2, y - h / 2), (x + w / 2, y - h / 2), (x + w / 2, y + h / 2), (x - w / 2, y + h / 2)], (0.85, 0.75, 0.55))
        horiz = w > h
        for k, col in enumerate(((0.6, 0.1, 0.1), (0.1, 0.1, 0.1), (0.9, 0.5, 0.1))):
            o = -w / 4 + k * w / 5 if horiz else -h / 4 + k * h / 5
            if horiz:
                _aa_fill(obj, [(x + o, y - h / 2), (x + o + 3, y - h / 2), (x + o + 3, y + h / 2), (x + o, y + h / 2)], col)
            else:
                _aa_fill(obj, [(x - w / 2, y + o), (x + w / 2, y + o), (x + w / 2, y + o + 3), (x - w / 2, y + o + 3)], col)
        ext = 1
    elif kind == "cap":
        _circle(obj, (x, y), w / 2 + 2, (0.75, 0.75, 0.78))
        _circle(obj, (x, y), w / 2, (0.15, 0.25, 0.6))
        cv2.line(obj, (int((x - w / 4) * 16), int(y * 16)), (int((x + w / 4) * 16), int(y * 16)), (0.85, 0.85, 0.9), 2, cv2.LINE_AA, 4)
        ext = 2
    else:  # led
        _aa_fill(obj, [(x - w / 2, y - h / 2), (x + w / 2, y - h / 2), (x + w / 2, y + h / 2), (x - w / 2, y + h / 2)], (0.95, 0.95, 0.92))
        _circle(obj, (x, y), h / 3, (0.9, 0.15, 0.1))
        ext = 1
    if parts is not None:
        cv2.rectangle(parts, (int(x - w / 2 - ext), int(y - h / 2 - ext)), (int(x + w / 2 + ext), int(y + h / 2 + ext)), float(pid), -1)


PCB_GREEN = (0.1, 0.42, 0.2)


@_fixed
def _pcb_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    parts = np.zeros((S, S), np.float32)
    board = [(18, 18), (238, 18), (238, 238), (18, 238)]
    _aa_fill(alpha, board, 1.0)
    _aa_fill(obj, board, PCB_GREEN)
    for (xa, ya, xb, yb) in ((30, 130, 226, 130), (130, 30, 130, 226), (40, 40, 110, 110), (180, 60, 226, 60), (180, 210, 226, 150)):
        cv2.line(obj, (xa * 16, ya * 16), (xb * 16, yb * 16), (0.25, 0.6, 0.3), 3, cv2.LINE_AA, 4)
    for hx, hy in ((30, 30), (226, 30), (30, 226), (226, 226)):
        _circle(obj, (hx, hy), 6, (0.85, 0.75, 0.4))
        _circle(obj, (hx, hy), 3, (0.1, 0.1, 0.1))
    for pid, (kind, x, y, w, h) in enumerate(_pcb_layout(), start=1):
        _draw_pcb_part(obj, parts, kind, x, y, w, h, pid)
    return obj, alpha, parts


def draw_pcb(rng, tile):
    img, ctx = _posed(rng, _pcb_canon, (0.05, 0.05, 0.05), (-3, 3), 6)

    def fill(im, m, r):
        im[m] = np.asarray(PCB_GREEN, np.float32) * float(r.uniform(0.95, 1.05))
        ys, xs = np.nonzero(m)  # bare footprint: silkscreen outline and solder pads where the part was
        cx, cy = xs.mean(), ys.mean()
        w = xs.max() - xs.min()
        silk = np.zeros(m.shape, np.float32)
        cv2.rectangle(silk, (int(xs.min()) + 2, int(ys.min()) + 2), (int(xs.max()) - 2, int(ys.max()) - 2), 1.0, 1)
        d.composite(im, np.asarray((0.92, 0.92, 0.88), np.float32), silk * m)
        for sx in (-1, 1):
            a = np.zeros(m.shape, np.float32)
            _circle(a, (cx + sx * w / 3, cy), 3.5, 1.0)
            d.composite(im, np.asarray((0.8, 0.78, 0.7), np.float32), a * m)
    ctx.part_fill = fill
    return img, ctx


def paint_pcb_swap(img, ctx, rng):
    """A part mounted in another part's place: its slot shows a different component kind."""
    ids = [int(i) for i in np.unique(ctx.parts) if i > 1]  # not the IC: keep the swap local
    rng.shuffle(ids)
    layout = _pcb_layout()
    for pid in ids:
        mask = ((ctx.parts == pid) * 255).astype(np.uint8)
        if d._finish(mask, ctx) is None:
            continue
        m = mask.astype(bool)
        ys, xs = np.nonzero(m)
        cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        kind = layout[pid - 1][0]
        img[m] = np.asarray(PCB_GREEN, np.float32)
        patch = img.copy()
        other = {"res": "cap", "cap": "led", "led": "res"}[kind]
        w, h = xs.max() - xs.min() - 2, ys.max() - ys.min() - 2
        if other == "cap":
            w = h = min(w, h)
        _draw_pcb_part(patch, None, other, cx, cy, w, h, 0)
        img[m] = patch[m]
        return mask
    return None


def _bagel_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    c = (S / 2, S / 2)
    _circle(alpha, c, 96, 1.0)
    _circle(alpha, c, 30, 0.0)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    r = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2)
    tube = np.clip(1 - ((r - 63) / 33) ** 2, 0, 1)
    base = np.asarray((0.55, 0.33, 0.14), np.float32)
    obj[:] = base * (0.55 + 0.55 * tube)[..., None]
    for _ in range(int(rng.integers(30, 50))):  # sesame seeds
        a, rr = rng.uniform(0, 2 * math.pi), rng.uniform(42, 84)
        p = (c[0] + rr * math.cos(a), c[1] + rr * math.sin(a))
        cv2.ellipse(obj, (int(p[0] * 16), int(p[1] * 16)), (int(3.5 * 16), int(1.8 * 16)), float(rng.uniform(0, 180)), 0, 360,
                    (0.93, 0.86, 0.65), -1, cv2.LINE_AA, 4)
    return obj, alpha, None


def draw_bagel(rng, tile):
    img, ctx = _posed(rng, _bagel_canon, (0.86, 0.86, 0.86), (0, 360), 14)
    return img, ctx


@_fixed
def _gland_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    c = (S / 2, S / 2)
    hexa = [(c[0] + 92 * math.cos(math.radians(60 * k)), c[1] + 92 * math.sin(math.radians(60 * k))) for k in range(6)]
    _aa_fill(alpha, hexa, 1.0)
    _aa_fill(obj, hexa, (0.7, 0.7, 0.72))
    for k in range(6):  # facets
        a, b = hexa[k], hexa[(k + 1) % 6]
        _aa_fill(obj, [a, b, (c[0] + (b[0] - c[0]) * 0.8, c[1] + (b[1] - c[1]) * 0.8), (c[0] + (a[0] - c[0]) * 0.8, c[1] + (a[1] - c[1]) * 0.8)],
                 tuple(0.55 + 0.08 * ((k * 3) % 5) for _ in range(3)))
    _circle(obj, c, 56, (0.82, 0.82, 0.84))
    _circle(obj, c, 40, (0.08, 0.08, 0.09))
    _circle(alpha, c, 40, 0.0)
    return obj, alpha, None


def draw_gland(rng, tile):
    # the gland sits in a fixture, turned by at most +-15 degrees: with free rotation the category was a
    # test of rotation invariance (the hexagon's corners move everywhere) more than of defects
    return _posed(rng, _gland_canon, (0.35, 0.33, 0.3), (-15, 15), 12)


@_fixed
def _bracket_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    poly = [(50, 50), (100, 50), (100, 156), (206, 156), (206, 206), (50, 206)]
    _aa_fill(alpha, poly, 1.0)
    _aa_fill(obj, poly, (0.16, 0.16, 0.18))
    cv2.polylines(obj, [np.round(np.array(poly) * 16).astype(np.int32)], True, (0.4, 0.4, 0.44), 3, cv2.LINE_AA, 4)
    for hc in ((75, 90), (170, 181)):
        _circle(alpha, hc, 10, 0.0)
    return obj, alpha, None


def draw_bracket(rng, tile):
    return _posed(rng, _bracket_canon, (0.8, 0.8, 0.78), (-20, 20), 14)


@_fixed
def _tubes_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    yy = np.mgrid[0:S, 0:S][0].astype(np.float32)
    for k in range(4):
        cy = 44 + 56 * k
        _aa_fill(alpha, [(-20, cy - 16), (S + 20, cy - 16), (S + 20, cy + 16), (-20, cy + 16)], 1.0)
        prof = np.clip(1 - ((yy - cy) / 16) ** 2, 0, 1)
        band = (np.abs(yy - cy) < 17)[..., None]
        obj = np.where(band, np.asarray((0.92, 0.93, 0.95), np.float32) * (0.55 + 0.45 * prof)[..., None], obj)
    return obj, alpha, None


def draw_tubes(rng, tile):
    return _posed(rng, _tubes_canon, (0.1, 0.1, 0.12), (-4, 4), 10)


@_fixed
def _bottle_canon(rng):
    obj = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    c = (S / 2, S / 2)
    _circle(alpha, c, 112, 1.0)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    r = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2)
    glass = np.asarray((0.22, 0.36, 0.26), np.float32)
    obj[:] = glass * (0.7 + 0.6 * np.clip(1 - np.abs(r - 78) / 34, 0, 1))[..., None]
    _circle(obj, c, 58, (0.05, 0.07, 0.06))
    _circle(obj, (c[0] - 14, c[1] - 14), 9, (0.55, 0.65, 0.58))
    return obj, alpha, None


def draw_bottle(rng, tile):
    return _posed(rng, _bottle_canon, (0.03, 0.03, 0.03), (0, 360), 8)


# ----------------------------------------------------------------------------- registry

CATEGORIES: list[Category] = [
    # SynMVTecAD
    Category("carpet", "SynMVTecAD", "texture", _texture(tile_carpet), ("hole", "stain", "contamination", "scratch"), tile_carpet),
    Category("wood", "SynMVTecAD", "texture", _texture(tile_wood), ("scratch", "hole", "stain", "crack"), tile_wood),
    Category("cable", "SynMVTecAD", "object", draw_cable, ("missing component", "swapped components", "contamination", "crack"),
             painters={"swapped components": paint_swap_conductors}),
    Category("screw", "SynMVTecAD", "object", draw_screw, ("scratch", "deformation", "broken", "contamination")),
    # SynVisA
    Category("pcb", "SynVisA", "object", draw_pcb, ("missing component", "swapped components", "scratch", "contamination"),
             painters={"swapped components": paint_pcb_swap}),
    Category("capsule", "SynVisA", "object", draw_capsule, ("crack", "stain", "deformation", "hole")),
    Category("pill", "SynVisA", "object", draw_pill, ("contamination", "crack", "broken", "stain")),
    # SynMVTec3D
    Category("bagel", "SynMVTec3D", "object", draw_bagel, ("crack", "hole", "contamination", "deformation")),
    Category("cable_gland", "SynMVTec3D", "object", draw_gland, ("scratch", "broken", "contamination", "hole")),
    Category("foam", "SynMVTec3D", "texture", _texture(tile_foam), ("hole", "stain", "contamination", "deformation"), tile_foam),
    # SynMPDD
    Category("metal_plate", "SynMPDD", "texture", draw_metal_plate, ("scratch", "stain", "deformation", "hole"), tile_metal),
    Category("bracket", "SynMPDD", "object", draw_bracket, ("scratch", "hole", "broken", "deformation")),
    Category("tubes", "SynMPDD", "object", draw_tubes, ("deformation", "stain", "crack", "contamination")),
    # SynExtra (training-only source)
    Category("fabric", "SynExtra", "texture", _texture(tile_fabric), ("hole", "stain", "contamination", "crack"), tile_fabric),
    Category("tile", "SynExtra", "texture", _texture(tile_tile), ("crack", "stain", "hole", "contamination"), tile_tile),
    Category("bottle", "SynExtra", "object", draw_bottle, ("contamination", "crack", "broken", "scratch")),
]

SUBDATASETS = ["SynMVTecAD", "SynVisA", "SynMVTec3D", "SynMPDD", "SynExtra"]
HELD_OUT = ["SynMVTecAD", "SynVisA", "SynMVTec3D", "SynMPDD"]
