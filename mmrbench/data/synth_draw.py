"""Drawing primitives and anomaly painters for the synthetic benchmark.

Images are float32 RGB arrays in [0, 1] of shape (H, W, 3); masks are uint8 (0/255). Every
function takes a ``numpy.random.Generator`` so that one seed fixes every pixel. OpenCV is used for
rasterisation (anti-aliased lines and polygons) because its output is deterministic across runs.

Anomaly painters share one contract: ``paint(img, ctx, rng) -> mask | None`` modifies ``img`` in
place and returns the defect's footprint (uint8, 255 inside) or None when no valid placement was
found. Masks are the exact footprint of what was painted, so boxes derived from them are tight.

Why over 400 lines: the drawing primitives and the nine anomaly painters share one contract and one
set of helpers; each painter is short, and keeping them together keeps the synthetic benchmark's
defect definitions in one file (the generator's version must change with any edit here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

SIZE = 256

Color = tuple[float, float, float]


# ----------------------------------------------------------------------------- primitives

def smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise rescaled to [0, 1]: the base of every texture."""
    n: np.ndarray = rng.standard_normal((h, w)).astype(np.float32)
    if sigma > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    lo, hi = float(n.min()), float(n.max())
    return (n - lo) / max(hi - lo, 1e-6)


def tint(gray: np.ndarray, color: Color) -> np.ndarray:
    return gray[..., None] * np.asarray(color, np.float32)[None, None, :]


def random_crop(tile: np.ndarray, rng: np.random.Generator, size: int = SIZE, flip: bool = True) -> np.ndarray:
    """A random ``size`` x ``size`` window of a larger texture tile (texture phase varies per image)."""
    h, w = tile.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    out = tile[y:y + size, x:x + size]
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def fill(size: int, color: Color) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.float32), (size, size, 3)).copy()


def background(rng: np.random.Generator, color: Color, grain: float = 0.04, size: int = SIZE) -> np.ndarray:
    """A flat backdrop with a little low-frequency unevenness (a real table is never flat)."""
    g: np.ndarray = 1.0 + grain * (smooth_noise(rng, size // 8, size // 8, 1.5) - 0.5) * 2
    g = cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)
    return tint(g, color)


def pose_matrix(angle_deg: float, dx: float, dy: float, size: int = SIZE) -> np.ndarray:
    return cv2.getRotationMatrix2D((size / 2, size / 2), angle_deg, 1.0) + np.array([[0, 0, dx], [0, 0, dy]])


def warp(img: np.ndarray, m: np.ndarray, border: Color | float = 0.0, nearest: bool = False) -> np.ndarray:
    size = img.shape[1], img.shape[0]
    bv: tuple[float, ...] | float
    if img.ndim == 3:
        bv = tuple(float(c) for c in border) if isinstance(border, tuple) else (float(border),) * 3
    else:
        bv = float(border) if not isinstance(border, tuple) else 0.0
    return cv2.warpAffine(img, m, size, flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=bv)


def composite(dst: np.ndarray, src: np.ndarray, alpha: np.ndarray) -> None:
    """dst <- alpha*src + (1-alpha)*dst, alpha (H, W) in [0, 1]; only the alpha's bounding box is touched."""
    x, y, w, h = cv2.boundingRect((alpha > 0).astype(np.uint8))
    if w == 0 or h == 0:
        return
    a = alpha[y:y + h, x:x + w, None]
    s = src[y:y + h, x:x + w] if np.ndim(src) == 3 else src
    d = dst[y:y + h, x:x + w]
    d *= 1 - a
    d += a * s


def shade_disk(h: int, w: int, cx: float, cy: float, r: float, light=(-0.6, -0.6)) -> np.ndarray:
    """A spherical shading factor (1 at the lit side, darker away from it) for round objects."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = (xx - cx) / max(r, 1), (yy - cy) / max(r, 1)
    return np.clip(1.0 + 0.25 * (nx * light[0] + ny * light[1]), 0.6, 1.3)


def luminance(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


_GRID: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRID:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        _GRID[size] = ((xx - size / 2) / (size / 2), (yy - size / 2) / (size / 2))
    return _GRID[size]


def apply_lighting(img: np.ndarray, rng: np.random.Generator, gain=(0.88, 1.12), gradient: float = 0.08,
                   noise=(0.008, 0.02)) -> np.ndarray:
    """Global gain, a linear illumination gradient in a random direction, and sensor noise."""
    h, w = img.shape[:2]
    g = float(rng.uniform(*gain))
    th = float(rng.uniform(0, 2 * math.pi))
    gx, gy = _grid(h)
    ramp = gx * math.cos(th) + gy * math.sin(th)
    out = img * (g * (1.0 + gradient * float(rng.uniform(0.3, 1.0)) * ramp))[..., None]
    # sensor noise: a random window of a fixed noise field (drawing fresh Gaussian noise for
    # every pixel of every image dominated the generator's run time)
    bank = _noise_bank()
    oy, ox = (int(v) for v in rng.integers(0, bank.shape[0] - h + 1, 2))
    out += bank[oy:oy + h, ox:ox + w] * np.float32(rng.uniform(*noise))
    return np.clip(out, 0, 1, out=out)


_NOISE: list[np.ndarray] = []


def _noise_bank() -> np.ndarray:
    if not _NOISE:
        _NOISE.append(np.random.default_rng(20260411).standard_normal((640, 640, 3), dtype=np.float32))
    return _NOISE[0]


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# zlib level 1 with the single "up" filter: half the time of OpenCV's default adaptive filtering
# for files about 2 % larger (noise-heavy 256 px images barely compress either way)
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]
if hasattr(cv2, "IMWRITE_PNG_FILTER") and hasattr(cv2, "IMWRITE_PNG_FILTER_UP"):
    _PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def png_bytes(arr: np.ndarray) -> bytes:
    """Deterministic PNG encoding (OpenCV writes no timestamps or text chunks)."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr, _PNG_PARAMS)
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# ----------------------------------------------------------------------------- anomaly context

@dataclass
class Ctx:
    """What a painter needs to know about the normal image it defaces.

    ``region``: bool (H, W), where the product is (defects land there). ``parts``: int (H, W)
    label map of discrete components (0 = none) for missing/swapped-component defects.
    ``bg``: image of what lies under the product (for missing chunks). ``part_fill``: colour
    left behind when a part is removed. ``extra``: category-specific data (e.g. part colours).
    """

    region: np.ndarray
    bg: np.ndarray | None = None
    parts: np.ndarray | None = None
    part_fill: Callable[[np.ndarray, np.ndarray, np.random.Generator], None] | None = None
    extra: dict = field(default_factory=dict)
    occupied: np.ndarray | None = None  # union of defects painted so far (dilated), kept free


def _pick_point(ctx: Ctx, rng: np.random.Generator, margin: int, pool: np.ndarray | None = None):
    """A random pixel of ``pool`` (default: the product region, slightly eroded) away from earlier
    defects and at least ``margin`` from the image border. Defects are clipped to the product
    (:func:`_on_product`), so thin parts (a screw, a tube) can carry long scratches and cracks."""
    area: np.ndarray = (ctx.region if pool is None else pool).astype(np.uint8)
    er = min(margin, 6)
    if er > 0 and pool is None:  # an explicit pool (e.g. the outline band) is used as given
        area = cv2.erode(area, np.ones((2 * er + 1, 2 * er + 1), np.uint8))
    if ctx.occupied is not None:
        area = area & ~ctx.occupied.astype(bool)
    h, w = area.shape
    area[:margin, :] = 0
    area[h - margin:, :] = 0
    area[:, :margin] = 0
    area[:, w - margin:] = 0
    ys, xs = np.nonzero(area)
    if len(xs) == 0:
        return None
    i = int(rng.integers(0, len(xs)))
    return float(xs[i]), float(ys[i])


def _contrast_color(img: np.ndarray, x: float, y: float, dark: Color, bright: Color) -> Color:
    h, w = img.shape[:2]
    x0, y0 = int(max(0, x - 12)), int(max(0, y - 12))
    patch = img[y0:int(min(h, y + 12)), x0:int(min(w, x + 12))]
    return dark if float(luminance(patch).mean()) > 0.45 else bright


def _on_product(ctx: Ctx, *layers: np.ndarray) -> None:
    """Clip painted layers (alpha maps or masks) to the product in place: a defect ends at its edge."""
    if ctx.region.all():
        return
    for a in layers:
        a[~ctx.region] = 0


def _finish(mask: np.ndarray, ctx: Ctx, min_area: int = 30) -> np.ndarray | None:
    if ctx.occupied is not None and (mask.astype(bool) & ctx.occupied).any():
        return None
    if int((mask > 0).sum()) < min_area:
        return None
    return mask


def _polyline(rng, x, y, length, bend, steps=5):
    th = float(rng.uniform(0, math.pi))
    # avoid nearly axis-aligned strokes whose boxes would be 2 px thin
    th = th if abs(math.sin(2 * th)) > 0.35 else th + math.pi / 5
    pts = []
    for i in range(steps + 1):
        t = (i / steps - 0.5) * length
        off = bend * math.sin(math.pi * i / steps)
        pts.append((x + t * math.cos(th) - off * math.sin(th), y + t * math.sin(th) + off * math.cos(th)))
    return np.array(pts, np.float32)


def _draw_poly(canvas, pts, color, thickness):
    cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], False, color, thickness, cv2.LINE_AA, 4)


# ----------------------------------------------------------------------------- generic painters

def paint_scratch(img, ctx, rng):
    length = float(rng.uniform(26, 44))
    p = _pick_point(ctx, rng, int(length / 2) + 2)
    if p is None:
        return None
    pts = _polyline(rng, p[0], p[1], length, float(rng.uniform(-6, 6)))
    th = int(rng.integers(2, 4))
    col = _contrast_color(img, *p, dark=(0.08, 0.08, 0.09), bright=(0.97, 0.97, 0.95))
    alpha = np.zeros(img.shape[:2], np.float32)
    _draw_poly(alpha, pts, 1.0, th)
    _on_product(ctx, alpha)
    mask = ((alpha > 0.25) * 255).astype(np.uint8)
    if _finish(mask, ctx) is None:
        return None
    composite(img, np.asarray(col, np.float32), np.clip(alpha * 0.95, 0, 1))
    return mask


def paint_crack(img, ctx, rng):
    length = float(rng.uniform(28, 46))
    p = _pick_point(ctx, rng, int(length / 2) + 4)
    if p is None:
        return None
    th0 = float(rng.uniform(0, 2 * math.pi))
    pts = [(p[0] - math.cos(th0) * length / 2, p[1] - math.sin(th0) * length / 2)]
    n = 7
    for _ in range(n):
        th = th0 + float(rng.uniform(-0.7, 0.7))
        step = length / n
        pts.append((pts[-1][0] + step * math.cos(th), pts[-1][1] + step * math.sin(th)))
    main = np.array(pts, np.float32)
    alpha = np.zeros(img.shape[:2], np.float32)
    _draw_poly(alpha, main, 1.0, 2)
    k = int(rng.integers(2, n - 1))  # a side branch
    bth = th0 + float(rng.choice([-1, 1])) * float(rng.uniform(0.6, 1.2))
    br = np.array([main[k], main[k] + np.array([math.cos(bth), math.sin(bth)]) * length * 0.35], np.float32)
    _draw_poly(alpha, br, 1.0, 2)
    _on_product(ctx, alpha)
    mask = ((alpha > 0.25) * 255).astype(np.uint8)
    if _finish(mask, ctx) is None:
        return None
    col = _contrast_color(img, *p, dark=(0.04, 0.035, 0.03), bright=(0.92, 0.9, 0.84))
    composite(img, np.asarray(col, np.float32), alpha)
    return mask


def paint_hole(img, ctx, rng):
    r = float(rng.uniform(6, 12))
    p = _pick_point(ctx, rng, int(r) + 3)
    if p is None:
        return None
    c = (int(round(p[0] * 16)), int(round(p[1] * 16)))
    alpha = np.zeros(img.shape[:2], np.float32)
    cv2.circle(alpha, c, int((r + 2.5) * 16), 1.0, -1, cv2.LINE_AA, 4)
    _on_product(ctx, alpha)
    mask = ((alpha > 0.25) * 255).astype(np.uint8)
    if _finish(mask, ctx) is None:
        return None
    rim = np.zeros_like(alpha)
    cv2.circle(rim, c, int((r + 1.5) * 16), 1.0, 2, cv2.LINE_AA, 4)
    _on_product(ctx, rim)
    composite(img, np.asarray(_contrast_color(img, *p, dark=(0.25, 0.22, 0.2), bright=(0.85, 0.82, 0.78)), np.float32), rim)
    inner = np.zeros_like(alpha)
    cv2.circle(inner, c, int(r * 16), 1.0, -1, cv2.LINE_AA, 4)
    _on_product(ctx, inner)
    composite(img, np.asarray((0.02, 0.02, 0.025), np.float32), inner)
    return mask


def _blob(rng, x, y, r, n=14):
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    radii = r * (0.7 + 0.5 * rng.random(n))
    return np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], 1).astype(np.float32)


def paint_stain(img, ctx, rng):
    r = float(rng.uniform(9, 17))
    p = _pick_point(ctx, rng, int(r * 1.3) + 2)
    if p is None:
        return None
    poly = _blob(rng, p[0], p[1], r)
    hard = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(hard, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
    _on_product(ctx, hard)
    if _finish(hard, ctx) is None:
        return None
    palette = np.asarray([(0.35, 0.2, 0.05), (0.8, 0.65, 0.1), (0.1, 0.08, 0.07), (0.6, 0.1, 0.1), (0.2, 0.25, 0.1)], np.float32)
    h, w = img.shape[:2]
    local = img[int(max(0, p[1] - r)):int(min(h, p[1] + r)), int(max(0, p[0] - r)):int(min(w, p[0] + r))].reshape(-1, 3).mean(0)
    # of the two stain colours farthest from the surface, pick one at random: a stain must show
    far = np.argsort(-np.abs(palette - local).sum(1))[:2]
    col = palette[int(far[int(rng.integers(0, 2))])]
    alpha = cv2.GaussianBlur(hard.astype(np.float32) / 255.0, (0, 0), 1.2) * float(rng.uniform(0.8, 0.95))
    _on_product(ctx, alpha)
    # a stain darkens/tints what is under it rather than covering it
    composite(img, img * 0.35 + col * 0.65, alpha)
    return hard


def paint_contamination(img, ctx, rng):
    r = float(rng.uniform(6, 10))
    p = _pick_point(ctx, rng, int(r) + 14)
    if p is None:
        return None
    palette = np.asarray([(0.55, 0.1, 0.7), (0.05, 0.7, 0.75), (0.95, 0.5, 0.05), (0.1, 0.1, 0.1), (0.9, 0.9, 0.2)], np.float32)
    h, w = img.shape[:2]
    local = img[int(max(0, p[1] - 10)):int(min(h, p[1] + 10)), int(max(0, p[0] - 10)):int(min(w, p[0] + 10))].reshape(-1, 3).mean(0)
    far = np.argsort(-np.abs(palette - local).sum(1))[:3]  # a foreign particle stands out from the surface
    col = palette[int(far[int(rng.integers(0, 3))])]
    alpha = np.zeros(img.shape[:2], np.float32)
    cv2.fillPoly(alpha, [np.round(_blob(rng, p[0], p[1], r, 10) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
    # a fibre trailing from the particle keeps the contamination one connected component
    fib = _polyline(rng, p[0], p[1], float(rng.uniform(16, 26)), float(rng.uniform(-5, 5)))
    fib = fib - fib[0] + np.array(p, np.float32)
    _draw_poly(alpha, fib, 1.0, 2)
    _on_product(ctx, alpha)
    mask = ((alpha > 0.25) * 255).astype(np.uint8)
    if _finish(mask, ctx) is None:
        return None
    composite(img, col, alpha)
    return mask


def paint_deformation(img, ctx, rng):
    R = float(rng.uniform(13, 20))
    p = _pick_point(ctx, rng, int(R) + 2)
    if p is None:
        return None
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - p[0], yy - p[1]
    r = np.sqrt(dx * dx + dy * dy) / R
    inside = r < 1
    # pinch/bulge displacement plus the shading of a dent lit from one side
    k = np.where(inside, (1 - r) ** 2, 0).astype(np.float32)
    s = float(rng.choice([-1.0, 1.0])) * 0.7
    mapx = xx - dx * k * s
    mapy = yy - dy * k * s
    warped = cv2.remap(img, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    th = float(rng.uniform(0, 2 * math.pi))
    # a dent reflects light unevenly: one flank bright, the other dark, plus a dark crease ring
    shade = 1 + 2.2 * np.sqrt(k) * (dx * math.cos(th) + dy * math.sin(th)) / R
    shade *= 1 - 0.5 * np.exp(-((r - 0.75) / 0.12) ** 2)
    inside &= ctx.region
    mask = ((r < 0.9) * 255).astype(np.uint8)
    _on_product(ctx, mask)
    if _finish(mask, ctx) is None:
        return None
    img[inside] = np.clip(warped[inside] * shade[inside][:, None], 0, 1)
    return mask


def paint_missing_chunk(img, ctx, rng):
    """A piece of the product's outline broken off, showing what lies beneath (``ctx.bg``)."""
    if ctx.bg is None:
        return None
    reg = ctx.region.astype(np.uint8)
    edge = reg & ~cv2.erode(reg, np.ones((7, 7), np.uint8)).astype(bool)
    r = float(rng.uniform(12, 20))
    p = _pick_point(ctx, rng, int(r) + 2, pool=edge)
    if p is None:
        return None
    disk = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(disk, [np.round(_blob(rng, p[0], p[1], r, 12) * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
    mask = (disk.astype(bool) & ctx.region).astype(np.uint8) * 255
    if _finish(mask, ctx, min_area=60) is None:
        return None
    m = mask.astype(bool)
    img[m] = ctx.bg[m]
    return mask


def paint_missing_part(img, ctx, rng):
    """One discrete component (a conductor, a chip) absent: its pixels get the part-fill."""
    if ctx.parts is None or ctx.part_fill is None:
        return None
    ids = [int(i) for i in np.unique(ctx.parts) if i > 0]
    rng.shuffle(ids)
    for pid in ids:
        mask = ((ctx.parts == pid) * 255).astype(np.uint8)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        if _finish(mask, ctx, min_area=40) is None:
            continue
        ctx.part_fill(img, mask.astype(bool), rng)
        return mask
    return None


PAINTERS: dict[str, Callable] = {
    "scratch": paint_scratch,
    "crack": paint_crack,
    "hole": paint_hole,
    "stain": paint_stain,
    "contamination": paint_contamination,
    "deformation": paint_deformation,
    "missing component": paint_missing_part,
    "broken": paint_missing_chunk,
}
