"""Load trained runs and run them over images: the inference half of evaluation.

A run directory (written by :mod:`kneelib.train.loop`) records its architecture, grade scheme and
preprocessing in ``config.json`` and its best weights in ``best.pt``. :func:`load_run` rebuilds the
model from that record; :func:`forward` runs several runs over the same images, decoding each image
once and preprocessing it once per distinct (image size, CLAHE) pair, with
:func:`kneelib.data.transforms.preprocess` — the one preprocessing function training used.
The ensemble arithmetic is in :mod:`kneelib.evaluate.ensemble`, metrics documents in
:mod:`kneelib.evaluate.split_evaluation`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kneelib.data.io import read_image
from kneelib.data.schemes import SCHEME_NAMES, Scheme, get_scheme
from kneelib.data.transforms import NORMALIZE, preprocess, to_tensor
from kneelib.errors import KneelibError
from kneelib.evaluate.calibration import load_temperature
from kneelib.models.registry import build_model, list_models
from kneelib.models.weights import normalize_keys
from kneelib.train.checkpoint import BEST, CONFIG, load_checkpoint, read_json
from kneelib.train.config import LOSSES
from kneelib.train.losses import head_of
from kneelib.train.runtime import resolve_device

CONFIG_FILE, CHECKPOINT_FILE = CONFIG, BEST  # config.json, best.pt
ENSEMBLE = "ensemble"

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
    temperature: float = 1.0  # fitted on val (calibration.json); 1.0: uncalibrated

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
    """A torch device from ``auto``/``cpu``/``cuda`` (see :func:`kneelib.train.runtime.resolve_device`)."""
    return device if isinstance(device, torch.device) else resolve_device(device)


def _one_line(text: str) -> str:
    """The first line of an error text (the CLI prints errors on one line)."""
    return text.strip().splitlines()[0] if text.strip() else text


#: A field check: (test of the value, what the value must be).
FieldRule = tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_image_size(value: Any) -> bool:
    return _is_int(value) and 16 <= value <= 4096


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _is_normalize(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(k), (int, float)) for k in ("mean", "std"))


def check_fields(doc: dict[str, Any], path: Path, rules: dict[str, FieldRule], required: Sequence[str]) -> None:
    """KneelibError naming ``path`` and the field unless ``doc`` has every ``required`` field and each field
    with a rule passes it (type and value)."""
    missing = [k for k in required if k not in doc]
    if missing:
        raise KneelibError(f"{path}: lacks the field(s) {', '.join(missing)}")
    for field, (ok, what) in rules.items():
        if field in doc and not ok(doc[field]):
            shown = json.dumps(doc[field])
            raise KneelibError(f"{path}: field {field!r} must be {what}, got "
                               f"{shown if len(shown) <= 60 else shown[:57] + '...'}")


#: What inference reads from a run's ``config.json``.
RUN_CONFIG_RULES: dict[str, FieldRule] = {
    "arch": (lambda v: v in list_models(), f"one of {', '.join(list_models())}"),
    "scheme": (lambda v: v in SCHEME_NAMES, f"one of {', '.join(SCHEME_NAMES)}"),
    "image_size": (_is_image_size, "an integer from 16 to 4096"),
    "clahe": (lambda v: isinstance(v, bool), "true or false"),
    "class_names": (_is_names, "a list of class names"),
    "num_classes": (lambda v: _is_int(v) and v >= 2, "an integer of at least 2"),
    "normalize": (_is_normalize, 'an object {"mean": number, "std": number}'),
    "loss": (lambda v: v in LOSSES, f"one of {', '.join(LOSSES)}"),
}


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's ``config.json``, validated for inference: every field it uses of the right type and value, and
    consistent with the scheme; KneelibError naming the file and the field otherwise."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise KneelibError(f"{path}: run config not found (is {run_dir} a training run directory?)")
    config = read_json(path)
    check_fields(config, path, RUN_CONFIG_RULES, required=("arch", "scheme", "image_size"))
    mean, std = NORMALIZE
    recorded = config.get("normalize")
    if isinstance(recorded, dict) and (recorded.get("mean"), recorded.get("std")) != (mean, std):
        raise KneelibError(f"{path}: field 'normalize': the run was trained with {recorded}, but this kneelib's "
                           f"preprocessing uses mean {mean} std {std}")
    scheme = get_scheme(config["scheme"])
    names = config.get("class_names")
    if names is not None and tuple(names) != tuple(scheme.class_names):
        raise KneelibError(f"{path}: field 'class_names' {names} does not match scheme "
                           f"{scheme.name} {list(scheme.class_names)}")
    if config.get("num_classes", scheme.num_classes) != scheme.num_classes:
        raise KneelibError(f"{path}: field 'num_classes' is {config['num_classes']} but scheme {scheme.name} "
                           f"has {scheme.num_classes}")
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
    config = read_run_config(path)
    scheme = get_scheme(config["scheme"])
    num_classes = scheme.num_classes
    ckpt = path / CHECKPOINT_FILE
    if not ckpt.is_file():
        raise KneelibError(f"{ckpt}: checkpoint not found (did training finish an epoch?)")
    model = build_model(str(config["arch"]), num_classes=num_classes, head=head_of(config.get("loss")))
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
    return LoadedRun(name=name or path.resolve().name, path=path, config=config, scheme=scheme, model=model,
                     temperature=load_temperature(path))


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
    tta: bool = False,
    calibrated: bool = False,
) -> list[np.ndarray]:
    """Logits (N, C) of every run for the images ``sources``, in order (one array per run).

    ``tta``: the mean of the logits of each image and its horizontal mirror. ``calibrated``: each run's
    logits divided by its fitted temperature (:mod:`kneelib.evaluate.calibration`).

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
                    x = batch.to(runs[i].device)
                    logits = runs[i].model(x).float()
                    if tta:
                        logits = (logits + runs[i].model(x.flip(-1)).float()) / 2
                    if calibrated:
                        logits = logits / runs[i].temperature
                    outputs[i].append(logits.cpu().numpy())
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
