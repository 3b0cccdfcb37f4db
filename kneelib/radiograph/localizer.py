"""A learned knee-joint localiser for full bilateral PA radiographs.

A small CNN sees the radiograph letterboxed (aspect kept, zero padding) into a fixed grayscale
input, normalised per image. It outputs two heatmaps, one per knee (image-left knee first), whose
soft-argmax gives the joint-box centres, and one number from globally pooled features: the box
side as a fraction of the input width. :meth:`Localizer.locate` maps these back to the radiograph:
a square box per knee, side ``CROP_MM / spacing_mm`` pixels when the pixel spacing is known, else
the predicted side. PA convention: the knee on the image's LEFT is the patient's right ("R").

Training (on synthetic radiographs from :func:`~kneelib.synthetic.bilateral.render_bilateral`)
lives in :mod:`kneelib.radiograph.localizer_training`; this module holds the model, inference and the metrics.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation, box_iou

from kneelib.errors import KneelibError
from kneelib.synthetic.anatomy import CROP_MM
from kneelib.train.checkpoint import load_checkpoint

__all__ = ["KneeBox", "Localizer", "LocalizerNet", "crop_knee", "default_localizer_path", "load_localizer",
           "evaluate_localizer", "localization_metrics", "sample_scene", "letterbox", "Frame",
           "INPUT_SIZE", "WIDTHS", "MODEL_FILE"]

#: Network input (height, width): radiographs are letterboxed into it.
INPUT_SIZE = (128, 160)
#: Channels of the four conv stages (strides 2, 4, 8, 16).
WIDTHS = (8, 16, 32, 64)
MODEL_FILE = "localizer.pt"
FORMAT = "kneelib-localizer-1"
#: Random-number streams of the synthetic scenes: training, validation, evaluation (held out).
TRAIN_STREAM, VAL_STREAM, EVAL_STREAM = 11, 12, 13


#: The localiser shipped with kneelib: ``kneelib localize train`` with the defaults, seed 0 (580 KB;
#: training again gives bit-identical weights). Its metrics.json lies beside it.
PACKAGED_LOCALIZER = Path(__file__).resolve().parent / "assets" / "localizer" / MODEL_FILE


def default_localizer_path() -> Path:
    """``<kneelib cache>/localizer/localizer.pt`` (default ``~/.cache/kneelib/localizer/localizer.pt``)."""
    from kneelib.data.dataset import default_cache_dir

    return default_cache_dir() / "localizer" / MODEL_FILE


@dataclasses.dataclass(frozen=True)
class KneeBox:
    """A square knee box in radiograph pixels (x1, y1 exclusive); ``side`` "R" or "L" (patient side)."""

    side: str
    x0: int
    y0: int
    x1: int
    y1: int

    def as_list(self) -> list[int]:
        """``[x0, y0, x1, y1]``."""
        return [self.x0, self.y0, self.x1, self.y1]

    @property
    def centre(self) -> tuple[float, float]:
        """The box centre (x, y) in pixel-edge coordinates."""
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


def square_box(side: str, cx: float, cy: float, size: float) -> KneeBox:
    """The integer square box of side ``round(size)`` (at least 1) centred on (cx, cy)."""
    n = max(1, int(round(size)))
    x0, y0 = int(round(cx - n / 2)), int(round(cy - n / 2))
    return KneeBox(side, x0, y0, x0 + n, y0 + n)


def crop_knee(image: np.ndarray, box: KneeBox, *, mirror: bool, pad: str = "constant") -> np.ndarray:
    """The box's pixels as a uint8 array, padded where the box leaves the image, flipped left-right if
    ``mirror``. ``pad``: "constant" (zeros) or "edge" (repeat the border pixels)."""
    if pad not in ("constant", "edge"):
        raise ValueError(f"pad must be 'constant' or 'edge', got {pad!r}")
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise KneelibError(f"crop_knee: expected a uint8 grayscale HxW image, got {image.dtype} {image.shape}")
    h, w = image.shape
    if box.x1 <= box.x0 or box.y1 <= box.y0:
        raise KneelibError(f"crop_knee: empty box {box.as_list()}")
    inner = image[max(box.y0, 0):max(min(box.y1, h), 0), max(box.x0, 0):max(min(box.x1, w), 0)]
    if inner.size == 0:  # wholly outside the image
        out = np.zeros((box.y1 - box.y0, box.x1 - box.x0), np.uint8)
    else:
        pads = ((max(0, -box.y0), max(0, box.y1 - h)), (max(0, -box.x0), max(0, box.x1 - w)))
        out = np.pad(inner, pads, mode=pad)
    return np.ascontiguousarray(out[:, ::-1] if mirror else out)


# ---------------------------------------------------------------- letterboxing

@dataclasses.dataclass(frozen=True)
class Frame:
    """Radiograph -> network input: ``x_in = x * sx + ox`` (pixel-edge coordinates), same for y."""

    sx: float
    sy: float
    ox: int
    oy: int


def resize_to_fit(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, Frame]:
    """The image shrunk (INTER_AREA) to fit ``size`` = (height, width) with its aspect kept, and its frame."""
    h, w = image.shape
    H, W = size
    scale = min(H / h, W / w)
    rw, rh = max(1, min(W, int(round(w * scale)))), max(1, min(H, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (rw, rh), interpolation=interp)
    return resized, Frame(rw / w, rh / h, (W - rw) // 2, (H - rh) // 2)


def letterbox(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, Frame]:
    """The image resized to fit ``size`` and centred on a zero canvas of that size, and its frame."""
    resized, frame = resize_to_fit(image, size)
    canvas = np.zeros(size, image.dtype)
    canvas[frame.oy:frame.oy + resized.shape[0], frame.ox:frame.ox + resized.shape[1]] = resized
    return canvas, frame


def normalise(canvas: np.ndarray) -> np.ndarray:
    """Float32 input: the canvas minus its mean, over its standard deviation."""
    x = canvas.astype(np.float32)
    return (x - x.mean()) / (x.std() + 1e-3 * max(float(x.max()), 1.0))


# ---------------------------------------------------------------- the network

class LocalizerNet(nn.Module):
    """Conv-BN-ReLU encoder (stride 16), stride-16 context upsampled onto stride-8 features with
    coordinate channels, two heatmaps + soft-argmax; a pooled linear head for the box side.

    ``forward`` returns (B, 5): x_R, y_R, x_L, y_L (fractions of the input width/height; R is the
    image-left knee) and the box side as a fraction of the input width.
    """

    def __init__(self, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        a, b, c, d = widths

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Module:
            return Conv2dNormActivation(cin, cout, 3, stride=stride)

        self.stage1 = nn.Sequential(conv(1, a, 2), conv(a, a))
        self.stage2 = nn.Sequential(conv(a, b, 2), conv(b, b))
        self.stage3 = nn.Sequential(conv(b, c, 2), conv(c, c))
        self.stage4 = nn.Sequential(conv(c, d, 2), conv(d, d), conv(d, d))
        self.fuse = nn.Sequential(conv(c + d + 2, c), nn.Conv2d(c, 2, 1))
        self.size = nn.Linear(d, 1)
        nn.init.constant_(self.size.bias, -1.0)  # sigmoid(-1) ~ 0.27, a typical side fraction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.stage3(self.stage2(self.stage1(x)))
        f4 = self.stage4(f3)
        b, _, h, w = f3.shape
        up = F.interpolate(f4, size=(h, w), mode="bilinear", align_corners=False)
        xs = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) / w
        ys = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) / h
        coords = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)]).expand(b, 2, h, w)
        heat = self.fuse(torch.cat([f3, up, coords * 2 - 1], 1))
        prob = heat.flatten(2).softmax(-1).view(b, 2, h, w)
        cx = (prob.sum(2) * xs).sum(-1)
        cy = (prob.sum(3) * ys).sum(-1)
        side = torch.sigmoid(self.size(f4.mean((2, 3))))
        return torch.cat([torch.stack([cx, cy], -1).flatten(1), side], 1)


# ---------------------------------------------------------------- inference

def _as_gray_u8(image: np.ndarray) -> np.ndarray:
    """A 2-D uint8 view of ``image`` (RGB/RGBA converted); KneelibError for anything else."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise KneelibError(f"locate: expected a uint8 grayscale radiograph, got {image.dtype} {image.shape}")
    if min(image.shape) < 16:
        raise KneelibError(f"locate: image {image.shape[1]}x{image.shape[0]} is too small for a radiograph")
    return image


def decode(pred: np.ndarray, frame: Frame, size: tuple[int, int], *,
           spacing_mm: float | None = None) -> list[KneeBox]:
    """Boxes (R first) in radiograph pixels from one network output row (see :class:`LocalizerNet`)."""
    H, W = size
    side_px = CROP_MM / spacing_mm if spacing_mm else float(pred[4]) * W / frame.sx
    centres = sorted(((float(pred[2 * k]) * W - frame.ox) / frame.sx,
                      (float(pred[2 * k + 1]) * H - frame.oy) / frame.sy) for k in range(2))
    return [square_box(side, cx, cy, side_px) for side, (cx, cy) in zip(("R", "L"), centres)]


class Localizer:
    """A trained :class:`LocalizerNet` with its input size; :meth:`locate` finds both knees."""

    def __init__(self, model: LocalizerNet, config: Mapping[str, Any], *, path: Path | None = None) -> None:
        self.model = model.eval()
        self.config = dict(config)
        self.size = tuple(int(v) for v in self.config["input_size"])
        self.path = path

    @torch.inference_mode()
    def predict_canvases(self, canvases: Sequence[np.ndarray]) -> np.ndarray:
        """Raw (N, 5) network outputs for letterboxed uint8 canvases of the input size."""
        x = torch.from_numpy(np.stack([normalise(c) for c in canvases])[:, None])
        return self.model(x).numpy()

    def locate(self, image: np.ndarray, spacing_mm: float | None = None) -> list[KneeBox]:
        """The two knee boxes of a bilateral PA radiograph, the image-left knee ("R") first."""
        if spacing_mm is not None and not spacing_mm > 0:
            raise KneelibError(f"locate: pixel spacing must be positive, got {spacing_mm!r}")
        canvas, frame = letterbox(_as_gray_u8(image), self.size)
        return decode(self.predict_canvases([canvas])[0], frame, self.size, spacing_mm=spacing_mm)


def load_localizer(path: str | os.PathLike | None = None) -> Localizer:
    """The localiser saved by :func:`~kneelib.radiograph.localizer_training.train_localizer`; KneelibError naming the
    file if missing or not a localiser. Default: the one trained into the cache
    (:func:`default_localizer_path`), else the packaged :data:`PACKAGED_LOCALIZER`."""
    if path is None:
        cached = default_localizer_path()
        path = cached if cached.is_file() or not PACKAGED_LOCALIZER.is_file() else PACKAGED_LOCALIZER
    path = Path(path)
    if not path.is_file():
        raise KneelibError(f"{path}: knee localiser not found; train one with `kneelib localize train "
                           f"--out {path.parent}`")
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise KneelibError(f"{path}: not a kneelib knee-localiser checkpoint")
    config = ckpt["config"]
    model = LocalizerNet(tuple(config["widths"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise KneelibError(f"{path}: weights do not fit the localiser ({exc})") from None
    return Localizer(model, config, path=path)


# ---------------------------------------------------------------- synthetic scenes and metrics

def sample_scene(rng: np.random.Generator) -> dict[str, Any]:
    """Random size, pixel spacing and grades of one synthetic bilateral radiograph (render_bilateral kwargs).

    Width 512-1024 px, height 0.6-1.35 of it, the 100 mm box 20-32 % of the width.
    """
    width = int(rng.integers(512, 1025))
    height = int(round(width * rng.uniform(0.6, 1.35)))
    spacing = CROP_MM / (rng.uniform(0.20, 0.32) * width)
    g = int(rng.integers(0, 5))
    return {"grades": (g, int(np.clip(g + rng.integers(-1, 2), 0, 4))), "width": width, "height": height,
            "spacing_mm": float(spacing)}


def _box_xyxy(box: KneeBox | Mapping[str, Any]) -> list[float]:
    if isinstance(box, KneeBox):
        return [float(v) for v in box.as_list()]
    return [float(box[k]) for k in ("x0", "y0", "x1", "y1")]


def _side(box: KneeBox | Mapping[str, Any]) -> str:
    return box.side if isinstance(box, KneeBox) else str(box["side"])


def localization_metrics(predicted: Sequence[Sequence[KneeBox | Mapping[str, Any]]],
                         truth: Sequence[Sequence[KneeBox | Mapping[str, Any]]],
                         spacing_mm: Sequence[float | None] | None = None) -> dict[str, float]:
    """IoU and centre error of predicted vs true boxes, matched by side, over all knees.

    Each item is one radiograph's boxes (:class:`KneeBox` or dicts with side, x0, y0, x1, y1); a
    true knee without a predicted box of its side counts as IoU 0 and is left out of the errors.
    ``spacing_mm`` (mm per pixel, per radiograph) gives the error in mm (NaN without it).
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} radiographs")
    spacing_mm = spacing_mm if spacing_mm is not None else [None] * len(truth)
    ious, err_px, err_mm = [], [], []
    for pred, true, sp in zip(predicted, truth, spacing_mm):
        by_side = {_side(b): b for b in pred}
        for t in true:
            p = by_side.get(_side(t))
            if p is None:
                ious.append(0.0)
                continue
            tb, pb = torch.tensor([_box_xyxy(t)]), torch.tensor([_box_xyxy(p)])
            ious.append(float(box_iou(pb, tb)[0, 0]))
            dist = float(torch.linalg.vector_norm((pb[0, :2] + pb[0, 2:]) / 2 - (tb[0, :2] + tb[0, 2:]) / 2))
            err_px.append(dist)
            err_mm.append(dist * sp if sp else float("nan"))
    iou = np.asarray(ious, float)

    def stat(values: list[float], fn: Any) -> float:
        return float(fn(values)) if values else float("nan")

    return {"mean_iou": stat(ious, np.mean), "median_iou": stat(ious, np.median),
            "centre_error_px_mean": stat(err_px, np.mean), "centre_error_px_median": stat(err_px, np.median),
            "centre_error_mm_mean": stat(err_mm, np.mean), "n_knees": int(iou.size),
            "iou_over_0.5": float((iou > 0.5).mean()) if iou.size else float("nan")}


def evaluate_localizer(localizer: Localizer, *, n: int = 200, seed: int = 1000, use_spacing: bool = False,
                       progress: bool = False) -> dict[str, float]:
    """:func:`localization_metrics` on ``n`` held-out synthetic radiographs (:func:`sample_scene` with
    the evaluation stream, so disjoint from training), plus ``inference_ms_mean`` per radiograph.
    ``use_spacing``: give :meth:`Localizer.locate` the true pixel spacing (box side then exact)."""
    from tqdm.auto import tqdm

    from kneelib.synthetic.bilateral import render_bilateral

    if not 1 <= n <= 100_000:
        raise KneelibError(f"evaluate: --n {n}: need 1..100000 radiographs")
    preds, truths, spacings, seconds = [], [], [], 0.0
    for i in tqdm(range(n), desc="localiser eval", unit="img", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, EVAL_STREAM, i])
        scene = sample_scene(rng)
        image, boxes = render_bilateral(rng, scene.pop("grades"), **scene)
        tic = time.perf_counter()
        preds.append(localizer.locate(image, spacing_mm=scene["spacing_mm"] if use_spacing else None))
        seconds += time.perf_counter() - tic
        truths.append(boxes)
        spacings.append(scene["spacing_mm"])
    metrics = localization_metrics(preds, truths, spacings)
    metrics["inference_ms_mean"] = 1000 * seconds / n
    return metrics
