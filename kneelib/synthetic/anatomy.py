"""The anatomy of a synthetic knee: shapes, KL signs driven by a continuous severity, and the renderer.

Every knee is drawn from signed-distance fields in *knee coordinates*: the origin is the centre
of the joint space, one unit is one crop width (``CROP_MM`` millimetres), X points to the medial
side of a right knee (image right in a PA view) and Y points down. Femoral condyles and notch,
tibial plateau and spines, fibular head, patella, soft tissue and trabecular texture are summed
into an X-ray-like attenuation image, exposed with quantum noise and processed like the real
``kneeKL224`` crops (8-bit, CLAHE clip 5.0 on 8x8 tiles, :func:`kneelib.data.transforms.clahe`).

A continuous ``severity`` (grade + normal noise, sd ``SEVERITY_SD``) drives the KL signs:
joint-space narrowing (mostly medial), marginal osteophytes and spine sharpening, subchondral
sclerosis and, from KL3 on, condyle flattening, plateau irregularity and cysts. The signs start
only above severity ~0.8, so KL0 and KL1 are nearly indistinguishable, as in real radiographs.

``signs`` (1 = realistic) draws caricatures: osteophytes and sclerosis ``signs`` times stronger and
the joint space ``(1 + signs) / 2`` times wider, so its narrowing spans more pixels. The smoke
profile uses ``signs=3`` at 64 px, where realistic signs are a pixel or two wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from kneelib.data.transforms import clahe

CROP_MM = 100.0  # physical width of one crop (one knee unit)
SEVERITY_SD = 0.3
CROP_CENTRE_Y = -0.085  # crops (and bilateral boxes) are centred this far above the joint line


def _ramp(s: float, lo: float, hi: float, power: float = 1.0) -> float:
    return float(min(max((s - lo) / (hi - lo), 0.0), 1.0) ** power)


def narrowing(s: float) -> float:
    """Fraction of the medial joint space lost at severity ``s``."""
    return 0.95 * _ramp(s, 0.75, 3.9)


def osteophyte_length(s: float) -> float:
    """Typical marginal osteophyte length (knee units) at severity ``s``."""
    return 0.11 * _ramp(s, 1.05, 4.0, 1.1)


def sclerosis(s: float) -> float:
    return _ramp(s, 1.7, 4.0, 1.2)


def deformity(s: float) -> float:
    return _ramp(s, 2.5, 4.2)


@dataclass
class Knee:
    """Sampled anatomy of one knee (knee units, python floats)."""

    severity: float
    jsw_lat: float
    jsw_med: float
    fem_hw: float
    tib_hw: float
    cond_dx: float
    cond_rx: float
    cond_ry: float
    notch_h: float
    spine_h: float
    fib: tuple[float, float, float]  # head centre x (lateral, > 0), y, radius
    pat: tuple[float, float, float, float, float]  # patella centre x, y, radii, density
    osteo: tuple[float, ...]  # lengths: femur lat, femur med, tibia lat, tibia med
    scler: float
    deform: float
    wobble: tuple[tuple[float, float], ...]  # plateau irregularity: (amplitude, phase) per harmonic
    cysts: tuple[tuple[float, float, float], ...]  # (x, depth below plateau, radius)
    density: float
    soft: float
    soft_w: float
    tex_amp: float


def sample_patient(rng: np.random.Generator) -> dict:
    """Anatomy and exposure shared by the two knees of one synthetic patient."""
    return {
        "size": rng.normal(1.07, 0.04),
        "jsw": rng.normal(0.034, 0.004),
        "density": rng.uniform(0.85, 1.15),
        "soft": rng.uniform(0.5, 0.8),
        "soft_w": rng.uniform(0.62, 0.78),
        "tex_amp": rng.uniform(0.04, 0.08),
        "lateral_dominant": bool(rng.random() < 0.12),
        # window low/high and gamma; one patient in six is over-exposed (washed-out bone)
        "exposure": (rng.uniform(-0.3, -0.1), rng.uniform(0.92, 1.0),
                     rng.uniform(0.6, 0.9) if rng.random() < 0.16 else rng.uniform(1.1, 2.1)),
        "noise": rng.uniform(0.001, 0.003),
    }


def sample_knee(rng: np.random.Generator, severity: float, patient: dict | None = None, *,
                signs: float = 1.0) -> Knee:
    """Draw one knee's anatomy with the radiographic signs of ``severity`` (``signs``: see above)."""
    pt = patient if patient is not None else sample_patient(rng)
    sz = pt["size"] * rng.normal(1.0, 0.01)
    s = float(severity)
    jsw = pt["jsw"] * rng.normal(1.0, 0.07) * (1.0 + signs) / 2.0
    n = narrowing(s) * rng.normal(1.0, 0.08)
    n_med, n_lat = min(max(n, 0.0), 0.97), min(max(0.45 * n * rng.uniform(0.5, 1.5), 0.0), 0.9)
    if pt["lateral_dominant"]:
        n_med, n_lat = n_lat, n_med
    ost = signs * osteophyte_length(s) * rng.uniform(0.45, 1.3, 4) * np.array([0.8, 1.1, 0.8, 1.2])
    ost *= rng.random(4) < 0.55 + 0.15 * s  # fewer sites at low severity
    dfm = deformity(s) * rng.uniform(0.6, 1.2)
    n_cysts = int(rng.poisson(2.0 * dfm))
    cysts = tuple(
        (float(rng.uniform(0.08, 0.35)), float(rng.uniform(0.02, 0.05)), float(rng.uniform(0.007, 0.015)))
        for _ in range(n_cysts)
    )
    return Knee(
        severity=s,
        jsw_lat=float(1.12 * jsw * (1 - n_lat)),
        jsw_med=float(jsw * (1 - n_med)),
        fem_hw=0.44 * sz * rng.normal(1, 0.02),
        tib_hw=0.425 * sz * rng.normal(1, 0.02),
        cond_dx=0.25 * sz,
        cond_rx=0.175 * sz * rng.normal(1, 0.03),
        cond_ry=0.165 * sz * rng.normal(1, 0.05),
        notch_h=rng.uniform(0.1, 0.14) * sz,
        spine_h=rng.uniform(0.06, 0.085) * sz * (1 + 0.6 * _ramp(s, 1.5, 4)),
        fib=(rng.normal(0.345, 0.015) * sz, rng.normal(0.32, 0.03) * sz, rng.uniform(0.075, 0.095) * sz),
        pat=(rng.normal(0.02, 0.03), rng.normal(-0.36, 0.04), 0.17 * sz, 0.2 * sz, rng.uniform(0.02, 0.07)),
        osteo=tuple(float(v) for v in ost),
        scler=signs * sclerosis(s) * rng.uniform(0.6, 1.3),
        deform=dfm,
        wobble=tuple((float(rng.normal()), float(rng.uniform(0, 2 * math.pi))) for _ in range(3)),
        cysts=cysts,
        density=pt["density"] * rng.normal(1, 0.03),
        soft=pt["soft"],
        soft_w=pt["soft_w"],
        tex_amp=pt["tex_amp"],
    )


# --- signed-distance helpers (vectorised over pixel grids) ---------------------------------------


@dataclass
class Grid:
    """A pixel grid and its affine map ``M`` (2x3) from pixel centres (col, row, 1) to knee coords."""

    X: np.ndarray
    Y: np.ndarray
    M: np.ndarray

    @classmethod
    def from_affine(cls, shape: tuple[int, int], M: np.ndarray) -> Grid:
        cols = np.arange(shape[1], dtype=np.float32) + 0.5
        rows = np.arange(shape[0], dtype=np.float32)[:, None] + 0.5
        m = M.astype(np.float32)
        return cls(m[0, 0] * cols + m[0, 1] * rows + m[0, 2], m[1, 0] * cols + m[1, 1] * rows + m[1, 2], M)

    @property
    def px(self) -> float:
        """Knee units per pixel."""
        return float(math.sqrt(abs(np.linalg.det(self.M[:, :2]))))

    def window(self, cx: float, cy: float, r: float) -> tuple[slice, slice]:
        """Pixel slices covering the knee-coordinate square centred on (cx, cy) with half-side r."""
        inv = np.linalg.inv(self.M[:, :2])
        pts = np.array([[cx - r, cx + r, cx - r, cx + r], [cy - r, cy - r, cy + r, cy + r]]) - self.M[:, 2:]
        cr = inv @ pts
        h, w = self.X.shape
        c0, c1 = int(np.clip(np.floor(cr[0].min()), 0, w)), int(np.clip(np.ceil(cr[0].max()) + 1, 0, w))
        r0, r1 = int(np.clip(np.floor(cr[1].min()), 0, h)), int(np.clip(np.ceil(cr[1].max()) + 1, 0, h))
        return slice(r0, r1), slice(c0, c1)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smin(-a, -b, k)


def _ellipse(X, Y, cx: float, cy: float, rx: float, ry: float, direction: tuple[float, float] = (1.0, 0.0)):
    """Approximate signed distance to an ellipse whose rx axis points along ``direction``."""
    x, y = X - cx, Y - cy
    if direction != (1.0, 0.0):
        c, s = direction
        x, y = c * x + s * y, -s * x + c * y
    x, y = x / rx, y / ry
    k0 = np.sqrt(x * x + y * y)
    k1 = np.sqrt(x * x / (rx * rx) + y * y / (ry * ry))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _superellipse(X, Y, cx: float, cy: float, rx: float, ry: float, p: float = 2.25) -> np.ndarray:
    """Approximate signed distance to a squarish ellipse (|x/rx|^p + |y/ry|^p = 1)."""
    f = (np.abs((X - cx) / rx) ** p + np.abs((Y - cy) / ry) ** p) ** (1.0 / p)
    return (f - 1.0) * min(rx, ry)


def _spur(d: np.ndarray, g: Grid, base: tuple[float, float], direction: tuple[float, float], length: float):
    """Union (in place, locally) a beak-shaped osteophyte growing from ``base`` along ``direction``."""
    if length <= 2e-3:
        return d
    n = math.hypot(*direction)
    u = (direction[0] / n, direction[1] / n)
    cx, cy = base[0] + u[0] * length * 0.4, base[1] + u[1] * length * 0.4
    sl = g.window(cx, cy, length + 0.03)
    if d[sl].size:
        e = _ellipse(g.X[sl], g.Y[sl], cx, cy, length * 0.6, length * 0.35 + 0.005, u)
        d[sl] = _smin(d[sl], e, 0.012)
    return d


def _plateau_top(X: np.ndarray, k: Knee) -> np.ndarray:
    w = 1.0 / (1.0 + np.exp(-X / 0.04))  # 0 lateral, 1 medial
    top = 0.5 * (k.jsw_lat * (1 - w) + k.jsw_med * w)
    top = top + 0.005 * (1 - k.deform) * np.exp(-(((X - k.cond_dx) / 0.12) ** 2))
    sp = 0.016 * (1 - 0.4 * _ramp(k.severity, 1.5, 4))
    peaks = np.exp(-(((X + 0.025) / sp) ** 2)) + 0.85 * np.exp(-(((X - 0.03) / sp) ** 2))
    top = top - k.spine_h * (0.65 * np.exp(-((X / 0.05) ** 2)) + 0.4 * peaks)
    edge = np.clip((np.abs(X) - (k.tib_hw - 0.07)) / 0.07, 0.0, None)
    top = top + 0.035 * edge * edge
    if k.deform > 0:
        for i, (amp, phase) in enumerate(k.wobble):
            top = top + k.deform * 0.004 * amp * np.sin((i + 2) * 9.0 * X + phase)
    return top


@dataclass
class _Bones:
    """The signed-distance fields of one knee's bones and the outlines the shading needs."""

    fem: np.ndarray  # femur (condyles, spurs and shaft)
    tib: np.ndarray  # tibia (plateau, spines, spurs and shaft)
    fib: np.ndarray  # fibular head and shaft
    pat: np.ndarray  # patella
    lat: np.ndarray  # lateral condyle alone
    med: np.ndarray  # medial condyle alone
    cy_l: float  # lateral condyle's centre (Y)
    hw: np.ndarray  # the femoral shaft's half width per row
    thw: np.ndarray  # the tibial shaft's half width per row
    ptop: np.ndarray  # the tibial plateau's top edge (Y per column)


def _femur(g: Grid, k: Knee) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """``(femur, lateral condyle, medial condyle, lateral centre Y, shaft half width)``: two condyles (the
    medial one flattened by deformity) under a flaring shaft, with marginal spurs."""
    X, Y = g.X, g.Y
    ry_m = k.cond_ry * (1 - 0.3 * k.deform)
    cy_l, cy_m = -k.jsw_lat / 2 - k.cond_ry, -k.jsw_med / 2 - ry_m
    lat = _superellipse(X, Y, -k.cond_dx, cy_l, k.cond_rx, k.cond_ry)
    med = _superellipse(X, Y, k.cond_dx, cy_m, k.cond_rx * 1.04, ry_m)
    top = -k.notch_h
    dist = np.clip(top - Y, 0.0, None)
    dist = dist / 0.7
    hw = 0.17 + (k.fem_hw - 0.17) / (1.0 + dist * dist * dist)
    body = _smax(np.abs(X) - hw, Y - top, 0.02)
    body = _smax(body, (Y - min(cy_l, cy_m) - 0.01 - (hw - np.abs(X))) * 0.7, 0.02)  # chamfer corners
    fem = _smin(_smin(lat, med, 0.02), body, 0.04)
    a = math.radians(40)
    for j, (sx, cy, ry) in enumerate(((-1, cy_l, k.cond_ry), (1, cy_m, ry_m))):
        base = (sx * (k.cond_dx + k.cond_rx * math.cos(a)), cy + ry * math.sin(a))
        fem = _spur(fem, g, base, (sx * 0.8, 1.0), k.osteo[j])
    return fem, lat, med, cy_l, hw


def _tibia(g: Grid, k: Knee) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tibia, plateau top, shaft half width)``: plateau with spines, metaphysis narrowing towards the
    shaft, marginal spurs."""
    X, Y = g.X, g.Y
    ptop = _plateau_top(X, k)
    dist = np.clip(Y, 0.0, None) / 0.45
    thw = 0.15 + (k.tib_hw - 0.15) / (1.0 + dist * dist * dist)
    tib = _smax(ptop - Y, np.abs(X) - thw, 0.03)
    for j, sx in enumerate((-1, 1)):
        bx = sx * (k.tib_hw - 0.015)
        by = float(_plateau_top(np.array([bx], dtype=np.float32), k)[0]) + 0.012
        tib = _spur(tib, g, (bx, by), (sx * 1.0, -0.3), k.osteo[2 + j])
    return tib, ptop, thw


def _bones(g: Grid, k: Knee) -> _Bones:
    """Femur, tibia, fibular head and shaft (lateral), patella (projected through the femur)."""
    X, Y = g.X, g.Y
    fem, lat, med, cy_l, hw = _femur(g, k)
    tib, ptop, thw = _tibia(g, k)
    fx, fy, fr = k.fib
    fib = np.full(X.shape, 1.0, dtype=np.float32)
    sl = g.window(-fx, fy + 1.5, 1.6)
    Xs, Ys = X[sl], Y[sl]
    fib[sl] = _smin(
        _ellipse(Xs, Ys, -fx, fy, fr, fr * 1.2), _smax(np.abs(Xs + fx + 0.02 - 0.04 * (Ys - fy)) - 0.032, fy - Ys, 0.01), 0.05
    )
    pcx, pcy, prx, pry, _ = k.pat
    pat = _ellipse(X, Y, pcx, pcy, prx, pry)
    return _Bones(fem=fem, tib=tib, fib=fib, pat=pat, lat=lat, med=med, cy_l=cy_l, hw=hw, thw=thw, ptop=ptop)


def knee_attenuation(g: Grid, k: Knee, rng: np.random.Generator) -> np.ndarray:
    """X-ray attenuation of knee ``k`` on grid ``g`` (float32 array of the grid's shape)."""
    b = _bones(g, k)
    tex = _texture(g.X.shape, g.px, rng)
    A = _bone_shadows(g, k, b, tex)
    inside_f, inside_t = _inner_contours(A, g, k, b)
    if k.scler > 0:
        A = _sclerosis(A, g, k, b, tex, inside_f, inside_t)
    _cysts(A, g, k)
    return A.astype(np.float32, copy=False)


def _bone_shadows(g: Grid, k: Knee, b: _Bones, tex: np.ndarray) -> np.ndarray:
    """Soft tissue plus each bone's shadow (thickness-weighted, textured) and its cortical rim."""
    X, Y, aa = g.X, g.Y, max(g.px, 1e-4)
    sw = k.soft_w + 0.12 * np.clip(-Y - 0.3, 0.0, 1.5)
    A = k.soft * np.sqrt(np.clip(1.0 - (X / sw) ** 2, 0.0, 1.0))
    # femur and tibia are thick in the beam direction right up to their articular surfaces: their
    # projected thickness falls off towards the sides only (distance to the shaft outline)
    fem_t = np.sqrt(np.clip((b.hw - np.abs(X)) / 0.2, 0.0, 1.0))
    tib_t = np.sqrt(np.clip((b.thw - np.abs(X)) / 0.2, 0.0, 1.0))
    fib_t = np.sqrt(np.clip(-b.fib / 0.06, 0.0, 1.0))
    pat_t = np.sqrt(np.clip(-b.pat / 0.12, 0.0, 1.0))
    epi = 1.0 + 0.12 * np.exp(-np.abs(Y) / 0.15)  # denser epiphyses near the joint
    for d, thick, dens, rim_w in ((b.fem, fem_t * epi, 1.0, 0.3), (b.tib, tib_t * epi, 1.0, 0.3),
                                  (b.fib, fib_t, 0.22, 0.06), (b.pat, pat_t, k.pat[4], 0.4)):
        mask = np.clip(0.5 - d / aa, 0.0, 1.0)
        rim = np.exp(-(((d + 0.006) / 0.005) ** 2))
        A = A + (k.density * dens) * (mask * (0.4 + 0.6 * thick) * (1.0 + k.tex_amp * tex) + rim_w * rim)
    return A


def _inner_contours(A: np.ndarray, g: Grid, k: Knee, b: _Bones) -> tuple[np.ndarray, np.ndarray]:
    """Add (in place) the condyle outlines inside the femur, the posterior rim of the plateau, the
    intercondylar fossa and the growth-plate scars; returns the femur's and tibia's interior weights."""
    X, Y = g.X, g.Y
    inside_f = np.clip(-b.fem / 0.02, 0.0, 1.0)
    lower = np.clip((Y - b.cy_l) / 0.06 + 1.0, 0.0, 1.0)
    A += (0.08 * k.density) * inside_f * lower * (np.exp(-((b.lat / 0.006) ** 2)) + np.exp(-((b.med / 0.006) ** 2)))
    inside_t = np.clip(-b.tib / 0.01, 0.0, 1.0)
    A += (0.12 * k.density) * inside_t * np.exp(-(((Y - b.ptop - 0.028) / 0.008) ** 2))
    sl = g.window(0.0, -k.notch_h - 0.03, 0.12)  # intercondylar fossa: a lucent arch above the notch
    if A[sl].size:
        fossa = _ellipse(X[sl], Y[sl], 0.0, -k.notch_h - 0.02, 0.06, 0.09)
        A[sl] -= 0.12 * k.density * np.clip(-fossa / 0.03, 0.0, 1.0)
    # growth-plate scars: faint wavy lines across the femoral and tibial metaphyses
    for y0, inside in ((-0.2 - 0.5 * k.notch_h, inside_f), (0.13, inside_t)):
        (a1, p1), (a2, p2) = k.wobble[1], k.wobble[2]
        line = Y - y0 - 0.01 * a1 * np.sin(X * 9.0 + p1) - 0.005 * a2 * np.sin(X * 23.0 + p2)
        A += (0.035 * k.density) * inside * np.exp(-((line / 0.006) ** 2))
    return inside_f, inside_t


def _sclerosis(A: np.ndarray, g: Grid, k: Knee, b: _Bones, tex: np.ndarray, inside_f: np.ndarray,
               inside_t: np.ndarray) -> np.ndarray:
    """Subchondral sclerosis, stronger in the (usually) narrowed compartment."""
    X, Y = g.X, g.Y
    w = 1.0 / (1.0 + np.exp(-X / 0.04))
    if k.jsw_lat < k.jsw_med:
        w = 1 - w
    comp = (0.35 + 0.65 * w) * (k.scler * k.density)
    near = np.clip((Y + 0.15) / 0.08, 0.0, 1.0)
    band = np.exp(-np.clip(Y - b.ptop, 0.0, None) / 0.05) * inside_t
    band += np.exp(np.clip(b.fem, None, 0.0) / 0.04) * inside_f * near
    return A + 0.8 * comp * band * (1.0 + 0.15 * tex)


def _cysts(A: np.ndarray, g: Grid, k: Knee) -> None:
    """Subtract (in place) the small lucencies under the narrowed plateau."""
    for cx, depth, r in k.cysts:
        cx = cx if k.jsw_med <= k.jsw_lat else -cx
        cy = float(_plateau_top(np.array([cx], dtype=np.float32), k)[0]) + depth
        sl = g.window(cx, cy, 2 * r)
        if A[sl].size:
            A[sl] -= 0.35 * k.density * np.clip(-_ellipse(g.X[sl], g.Y[sl], cx, cy, r, r * 0.8) / (0.5 * r), 0, 1)


def _texture(shape: tuple[int, ...], px: float, rng: np.random.Generator) -> np.ndarray:
    """Trabecular-like texture: fine vertical streaks plus a coarser mottle, about unit variance."""
    noise = rng.standard_normal((2, *shape), dtype=np.float32)
    s = 0.0026 / px  # fine scale in pixels
    fine = cv2.GaussianBlur(noise[0], (0, 0), sigmaX=max(0.5, s), sigmaY=max(1.5, 4.5 * s))
    coarse = cv2.GaussianBlur(noise[1], (0, 0), sigmaX=max(0.8, 3 * s))
    low = cv2.resize(rng.standard_normal((4, 4), dtype=np.float32), shape[::-1], interpolation=cv2.INTER_CUBIC)
    return (fine / (fine.std() + 1e-6) + 0.25 * coarse / (coarse.std() + 1e-6) + 1.2 * low) / 1.6


def expose(A: np.ndarray, rng: np.random.Generator, patient: dict, *, blur_px: float = 0.0) -> np.ndarray:
    """Turn attenuation into an 8-bit radiograph: exposure curve, window, quantum noise, blur."""
    lo, hi, gamma = patient["exposure"]
    img = 1.0 - np.exp(-0.9 * A)
    img = np.clip((img - lo) * (1.0 / (hi - lo)), 0.0, 1.0) ** gamma
    img += rng.standard_normal(A.shape, dtype=np.float32) * np.float32(patient["noise"])
    if blur_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_px)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def crop_grid(rng: np.random.Generator, size: int) -> Grid:
    """The pixel grid of one crop: centred near the joint, small random shift, rotation and scale."""
    theta = math.radians(rng.normal(0.0, 2.5))
    scale = rng.uniform(0.93, 1.07) * size
    ox, oy = rng.normal(0.0, 0.02), CROP_CENTRE_Y + rng.normal(0.0, 0.02)
    c, s = math.cos(theta), math.sin(theta)
    L = np.array([[c, -s], [s, c]]) / scale
    return Grid.from_affine((size, size), np.hstack([L, (np.array([ox, oy]) - L @ [size / 2, size / 2])[:, None]]))


def render_knee(
    rng: np.random.Generator,
    severity: float,
    *,
    size: int = 224,
    side: str = "R",
    patient: dict | None = None,
    blurred: bool = False,
    signs: float = 1.0,
) -> tuple[np.ndarray, Knee]:
    """Render one CLAHE-processed knee-joint crop (uint8, size x size) and return its anatomy.

    Left knees are mirrored. ``blurred`` applies a defocus-like Gaussian blur before CLAHE;
    ``signs`` > 1 exaggerates the KL signs (see the module docstring).
    """
    patient = patient if patient is not None else sample_patient(rng)
    k = sample_knee(rng, severity, patient, signs=signs)
    A = knee_attenuation(crop_grid(rng, size), k, rng)
    blur_px = rng.uniform(2.2, 3.5) * size / 224 if blurred else 0.0
    img = clahe(expose(A, rng, patient, blur_px=blur_px))
    if side == "L":
        img = np.ascontiguousarray(img[:, ::-1])
    return img, k


def min_jsw_mm(k: Knee) -> float:
    """The narrower compartment's joint-space width in millimetres (a hidden ground truth)."""
    return float(min(k.jsw_med, k.jsw_lat) * CROP_MM)


# --- the data set writer ---------------------------------------------------------------------------
