"""Evaluate trained runs (and their ensemble) on a data split: predictions, metrics, summary.

A run directory (written by :mod:`kneelib.train`) records its architecture, grade scheme and
preprocessing in ``config.json`` and its best weights in ``best.pt``. :func:`load_run` rebuilds the
model from that record; :func:`forward` runs several runs over the same images, decoding each image
once and preprocessing it once per distinct (image size, CLAHE) pair, with
:func:`kneelib.data.transforms.preprocess` — the one preprocessing function training used.
The ensemble is the paper's: the unweighted mean of the members' logits, then softmax
(:func:`ensemble_probabilities`). Metrics come from :func:`kneelib.metrics.compute_metrics`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kneelib import atomic
from kneelib.checkpoint import BEST, CONFIG, load_checkpoint, read_json
from kneelib.data.io import read_image
from kneelib.data.layout import discover, select_split, splits_present
from kneelib.data.schemes import Scheme, get_scheme
from kneelib.data.transforms import NORMALIZE, preprocess, to_tensor
from kneelib.errors import KneelibError
from kneelib.metrics import compute_metrics
from kneelib.models.registry import build_model
from kneelib.models.weights import normalize_keys
from kneelib.runtime import resolve_device

CONFIG_FILE, CHECKPOINT_FILE = CONFIG, BEST  # config.json, best.pt
ENSEMBLE = "ensemble"
#: ``--split all`` evaluates every discovered sample (a pool or manifest without splits).
ALL_SPLITS = "all"

#: An image to grade: a path read with :func:`kneelib.data.io.read_image`, or a uint8 grayscale array.
ImageSource = str | os.PathLike | np.ndarray


@dataclass
class LoadedRun:
    """A trained run ready for inference: its config, grade scheme and eval-mode model."""

    name: str
    path: Path
    config: dict[str, Any]
    scheme: Scheme
    model: nn.Module

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def clahe(self) -> bool:
        return bool(self.config.get("clahe", False))

    @property
    def preprocessing(self) -> tuple[int, bool]:
        """The (image size, CLAHE) pair that decides this run's input tensor."""
        return self.image_size, self.clahe

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def as_device(device: str | torch.device = "auto") -> torch.device:
    """A torch device from ``auto``/``cpu``/``cuda`` (see :func:`kneelib.runtime.resolve_device`)."""
    return device if isinstance(device, torch.device) else resolve_device(device)


def _one_line(text: str) -> str:
    """The first line of an error text (the CLI prints errors on one line)."""
    return text.strip().splitlines()[0] if text.strip() else text


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise KneelibError(f"{path}: run config not found (is {run_dir} a training run directory?)")
    config = read_json(path)
    missing = [k for k in ("arch", "scheme", "image_size") if k not in config]
    if missing:
        raise KneelibError(f"{path}: run config lacks {', '.join(missing)}")
    mean, std = NORMALIZE
    recorded = config.get("normalize")
    if isinstance(recorded, dict) and (recorded.get("mean"), recorded.get("std")) != (mean, std):
        raise KneelibError(f"{path}: the run was trained with normalize {recorded}, but this kneelib's "
                           f"preprocessing uses mean {mean} std {std}")
    return config


def _check_fit(model: nn.Module, state: dict[str, Any], what: str) -> None:
    """KneelibError (one line) unless ``state`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} is {tuple(getattr(state[k], 'shape', ()))}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and getattr(state[k], "shape", None) != v.shape
    ]
    problems = []
    if wrong:
        problems.append(f"shape of {wrong[0]}" + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if problems:
        raise KneelibError(f"{what}: {'; '.join(problems)}")


def load_run(
    run_dir: str | os.PathLike, *, device: str | torch.device = "cpu", name: str | None = None
) -> LoadedRun:
    """Load a run directory: ``config.json``, scheme and ``best.pt`` into an eval-mode model.

    A missing directory, config or checkpoint, an unknown architecture/scheme, or a checkpoint whose
    keys or shapes do not fit the recorded architecture raises :class:`KneelibError` naming it.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise KneelibError(f"{path}: run directory not found")
    config = _read_config(path)
    scheme = get_scheme(str(config["scheme"]))
    recorded = config.get("class_names")
    if recorded is not None and tuple(recorded) != tuple(scheme.class_names):
        raise KneelibError(f"{path / CONFIG_FILE}: class_names {list(recorded)} do not match scheme "
                           f"{scheme.name} {list(scheme.class_names)}")
    num_classes = int(config.get("num_classes", scheme.num_classes))
    if num_classes != scheme.num_classes:
        raise KneelibError(f"{path / CONFIG_FILE}: num_classes {num_classes} but scheme {scheme.name} "
                           f"has {scheme.num_classes}")
    ckpt = path / CHECKPOINT_FILE
    if not ckpt.is_file():
        raise KneelibError(f"{ckpt}: checkpoint not found (did training finish an epoch?)")
    model = build_model(str(config["arch"]), num_classes=num_classes)
    try:
        state = load_checkpoint(ckpt)  # torch.load(weights_only=True)
    except KneelibError as exc:
        raise KneelibError(_one_line(str(exc))) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a last.pt-style bundle
    if not isinstance(state, dict):
        raise KneelibError(f"{ckpt}: not a model state_dict")
    state = normalize_keys(state)  # the models' one key clean-up (DataParallel prefix, old keys)
    _check_fit(model, state, f"{ckpt} does not fit the recorded architecture {config['arch']} "
               f"with {num_classes} classes")
    model.load_state_dict(state)
    model.to(as_device(device)).eval()
    return LoadedRun(name=name or path.resolve().name, path=path, config=config, scheme=scheme, model=model)


def run_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Display names of run directories: the folder name, ``parent/name`` where names repeat."""
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        dup = next(p for p in resolved if resolved.count(p) > 1)
        raise KneelibError(f"{dup}: run given more than once")
    names = [p.name for p in resolved]
    names = [
        f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 or p.name == ENSEMBLE else p.name
        for p in resolved
    ]
    counts: dict[str, int] = {}
    unique = []
    for n in names:
        counts[n] = counts.get(n, 0) + 1
        unique.append(n if names.count(n) == 1 else f"{n}#{counts[n]}")
    return unique


def load_runs(
    run_dirs: Sequence[str | os.PathLike], *, device: str | torch.device = "cpu"
) -> list[LoadedRun]:
    """Load several runs (names disambiguated) and check they share scheme and class names."""
    if not run_dirs:
        raise KneelibError("no run directories given")
    runs = [load_run(d, device=device, name=n) for d, n in zip(run_dirs, run_names(run_dirs))]
    check_compatible(runs)
    return runs


def check_compatible(runs: Sequence[LoadedRun]) -> Scheme:
    """The runs' common scheme; KneelibError if schemes or class names differ (no ensemble possible)."""
    first = runs[0]
    for run in runs[1:]:
        if run.scheme.name != first.scheme.name or run.scheme.class_names != first.scheme.class_names:
            raise KneelibError(
                f"runs cannot be combined: {run.path} uses scheme {run.scheme.name} "
                f"{list(run.scheme.class_names)} but {first.path} uses {first.scheme.name} "
                f"{list(first.scheme.class_names)}"
            )
    return first.scheme


def _as_gray(source: ImageSource) -> np.ndarray:
    return source if isinstance(source, np.ndarray) else read_image(source)


def input_batch(sources: Sequence[ImageSource], *, image_size: int, clahe: bool) -> torch.Tensor:
    """The model input ``N×3×S×S`` for images: read, :func:`preprocess`, :func:`to_tensor`."""
    pixels = np.stack([preprocess(_as_gray(s), image_size=image_size, clahe=clahe) for s in sources])
    return to_tensor(pixels[:, None])  # N×1×S×S uint8 → N×3×S×S normalised


def forward(
    runs: Sequence[LoadedRun],
    sources: Sequence[ImageSource],
    *,
    batch_size: int = 64,
    progress: bool | None = None,
    desc: str = "predict",
    reader: Callable[[ImageSource], np.ndarray] = _as_gray,
) -> list[np.ndarray]:
    """Logits (N, C) of every run for the images ``sources``, in order (one array per run).

    Images are decoded once and preprocessed once per distinct (size, CLAHE) of the runs; each batch
    goes through every run under ``torch.inference_mode()``. ``progress=None`` shows a tqdm bar only
    when stderr is a terminal.
    """
    if batch_size < 1:
        raise KneelibError(f"batch size must be at least 1, got {batch_size}")
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(run.preprocessing, []).append(i)
    outputs: list[list[np.ndarray]] = [[] for _ in runs]
    disable = None if progress is None else not progress
    with torch.inference_mode(), tqdm(total=len(sources), desc=desc, unit="img", disable=disable) as bar:
        for start in range(0, len(sources), batch_size):
            grays = [reader(s) for s in sources[start:start + batch_size]]
            for (size, clahe), members in groups.items():
                batch = input_batch(grays, image_size=size, clahe=clahe)
                for i in members:
                    logits = runs[i].model(batch.to(runs[i].device))
                    outputs[i].append(logits.float().cpu().numpy())
            bar.update(len(grays))
    num_classes = [r.scheme.num_classes for r in runs]
    return [
        np.concatenate(out) if out else np.zeros((0, c), dtype=np.float32)
        for out, c in zip(outputs, num_classes)
    ]


def run_logits(run: LoadedRun, sources: Iterable[Any], **kwargs: Any) -> np.ndarray:
    """Logits (N, C) of one run for samples (``.path``), image paths or grayscale arrays."""
    items = [getattr(s, "path", s) for s in sources]
    return forward([run], items, **kwargs)[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def ensemble_probabilities(logits_list: Sequence[np.ndarray]) -> np.ndarray:
    """The paper's ensemble: softmax of the unweighted mean of the members' logits (N, C)."""
    if len(logits_list) == 0:
        raise ValueError("no logits to ensemble")
    stacked = np.stack([np.asarray(x, dtype=np.float64) for x in logits_list])
    return softmax(stacked.mean(axis=0))


def _split_samples(data_dir: str | os.PathLike, split: str) -> list:
    samples = discover(data_dir)
    if split == ALL_SPLITS:
        chosen = list(samples)
    else:
        present = [s for s in splits_present(samples) if s]
        if split not in present:
            listed = ", ".join(present) if present else "none (a pool without splits; use --split all)"
            raise KneelibError(f"{data_dir}: no '{split}' split (splits present: {listed})")
        chosen = select_split(samples, split)
    if not chosen:
        raise KneelibError(f"{data_dir}: no images in split '{split}'")
    return chosen


def _prediction_frame(
    model: str, samples: Sequence[Any], y_true: np.ndarray, probs: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "model": model,
            "path": [str(s.path) for s in samples],
            "grade": [int(s.grade) for s in samples],
            "true": [names[i] for i in y_true],
            "pred": [names[i] for i in probs.argmax(axis=1)],
        }
    )
    for k, name in enumerate(names):
        frame[f"p_{name}"] = probs[:, k]
    return frame


def evaluate_runs(
    run_dirs: Sequence[str | os.PathLike],
    data_dir: str | os.PathLike,
    *,
    split: str = "test",
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool | None = None,
    n_boot: int = 1000,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Evaluate each run and (with several) their ensemble on ``split`` of ``data_dir``.

    Returns the metrics document ``{"models": {name: M}, "ensemble": M | None, "split", "data",
    "scheme", "class_names", "runs": {name: path}}`` and a long per-image predictions DataFrame with
    columns ``model, path, grade, true, pred, p_<class>...``: one block of rows per run and, with
    several runs, one for ``model == "ensemble"`` (``grade`` is the KL grade, ``true``/``pred`` class
    names).
    """
    runs = load_runs(run_dirs, device=as_device(device))
    scheme = runs[0].scheme
    samples = _split_samples(data_dir, split)
    y_true = np.array([scheme.encode(s.grade) for s in samples], dtype=np.int64)
    logits = forward(runs, [s.path for s in samples], batch_size=batch_size, progress=progress,
                     desc=f"evaluate {split}")
    names = list(scheme.class_names)
    models, frames = {}, []
    for run, z in zip(runs, logits):
        probs = softmax(z)
        models[run.name] = compute_metrics(y_true, probs, scheme, n_boot=n_boot)
        frames.append(_prediction_frame(run.name, samples, y_true, probs, names))
    ensemble = None
    if len(runs) > 1:
        probs = ensemble_probabilities(logits)
        ensemble = compute_metrics(y_true, probs, scheme, n_boot=n_boot)
        frames.append(_prediction_frame(ENSEMBLE, samples, y_true, probs, names))
    metrics = {
        "models": models,
        "ensemble": ensemble,
        "split": split,
        "data": str(data_dir),
        "scheme": scheme.name,
        "class_names": names,
        "runs": {run.name: str(run.path) for run in runs},
    }
    return metrics, pd.concat(frames, ignore_index=True)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def save_metrics(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the metrics document as JSON atomically (NaN → null)."""
    return atomic.write_text(path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")


def save_predictions(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the per-image predictions CSV atomically."""
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def format_summary(metrics: dict[str, Any]) -> str:
    """A compact text table: n, accuracy (95% CI), QWK, weighted F1 per model and the ensemble."""
    rows = list(metrics["models"].items())
    if metrics.get("ensemble"):
        rows.append((ENSEMBLE, metrics["ensemble"]))

    def f(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    width = max(len("model"), *(len(n) for n, _ in rows))
    lines = [f"{'model':<{width}}  {'n':>6}  {'accuracy':>8}  {'95% CI':>15}  {'qwk':>7}  {'f1_w':>6}"]
    for name, m in rows:
        ci = "[{}, {}]".format(*(f(v, ".3f") for v in m["ci"]["accuracy"]))
        lines.append(f"{name:<{width}}  {m['n']:>6}  {f(m['accuracy'], '.4f'):>8}  {ci:>15}  "
                     f"{f(m['qwk'], '.4f'):>7}  {f(m['f1_weighted'], '.3f'):>6}")
    return "\n".join(lines)
