"""Export one run or an ensemble as a single ONNX or TorchScript model with a JSON sidecar.

The exported model maps an ``N×3×S×S`` float32 batch, preprocessed exactly like
:func:`kneelib.evaluate.input_batch` (resize, optional CLAHE, ``x / 255`` normalised with
:data:`kneelib.data.transforms.NORMALIZE`, gray copied to 3 channels), to ``N×C`` logits: the mean
of the members' logits, so a softmax gives :func:`kneelib.evaluate.ensemble_probabilities`. The batch
axis is dynamic. ONNX goes through ``torch.onnx.export(dynamo=True)`` (the torch.export-based
exporter; the legacy TorchScript-based one is deprecated) and is checked with ``onnx.checker``;
TorchScript through ``torch.jit.trace`` + ``torch.jit.save``. ``MODEL.json`` beside ``MODEL``
records classes, preprocessing, members and the model file's sha256; :class:`ExportedModel` reads
both back and runs ONNX models with onnxruntime (CPU) and TorchScript ones with ``torch.jit.load``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kneelib import __version__, atomic
from kneelib.data.schemes import SCHEME_NAMES, get_scheme
from kneelib.data.transforms import NORMALIZE
from kneelib.errors import KneelibError
from kneelib.evaluate import (
    CHECKPOINT_FILE,
    RUN_CONFIG_RULES,
    ImageSource,
    check_fields,
    input_batch,
    load_runs,
    softmax,
)
from kneelib.train.checkpoint import read_json, write_json

__all__ = ["FORMATS", "MIN_OPSET", "OPSET", "EnsembleLogits", "ExportedModel", "check_opset", "export_runs",
           "sidecar_path"]

FORMATS = ("onnx", "torchscript")
#: The ONNX opset written (ai.onnx domain).
OPSET = 20
#: The lowest opset torch's dynamo exporter writes (asked for less, it converts, fails and keeps 18).
MIN_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: Largest |logit| difference between the exported and the PyTorch model accepted at export time.
VERIFY_TOLERANCE = 1e-3
_REQUIRED = ("format", "sha256", "scheme", "classes", "image_size", "clahe", "normalization", "members")
#: The sidecar's fields: type and value (:func:`kneelib.evaluate.inference.check_fields`).
_SIDECAR_RULES = {
    "format": (lambda v: v in FORMATS, f"one of {', '.join(FORMATS)}"),
    "sha256": (lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
               "64 lower-case hex digits"),
    "scheme": (lambda v: v in SCHEME_NAMES, f"one of {', '.join(SCHEME_NAMES)}"),
    "classes": RUN_CONFIG_RULES["class_names"],
    "image_size": RUN_CONFIG_RULES["image_size"],
    "clahe": RUN_CONFIG_RULES["clahe"],
    "normalization": RUN_CONFIG_RULES["normalize"],
    "members": (lambda v: isinstance(v, list) and all(isinstance(m, dict) for m in v), "a list of objects"),
}


class EnsembleLogits(nn.Module):
    """The members' logits averaged (one member: its logits); softmax gives the ensemble's probabilities."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """The sidecar JSON of a model file: ``MODEL`` + ``.json``."""
    return Path(f"{os.fspath(model_path)}.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> int:
    """``torch.onnx.export`` (dynamo) with a dynamic batch axis, weights inside; the opset written."""
    import onnx

    try:
        torch.onnx.export(
            module, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, external_data=False, verbose=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - exporter/checker failures of many kinds
        raise KneelibError(f"ONNX export failed ({_first_line(exc)})") from exc
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``torch.jit.trace`` + ``torch.jit.save`` (deprecated in torch 2.14 but still supported)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as exc:  # noqa: BLE001
        raise KneelibError(f"TorchScript export failed ({_first_line(exc)})") from exc


def check_opset(opset: int) -> None:
    """KneelibError for an ONNX opset the exporter cannot write: below :data:`MIN_OPSET` (the dynamo exporter's
    first) or above the newest the installed ``onnx`` knows."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise KneelibError(f"--opset {opset}: the ONNX exporter writes opsets {MIN_OPSET} to {newest}")


def export_runs(
    run_dirs: Sequence[str | os.PathLike],
    *,
    fmt: str = "onnx",
    out: str | os.PathLike,
    opset: int = OPSET,
) -> dict[str, Any]:
    """Export the run(s) as one model file at ``out`` (ONNX or TorchScript) plus ``out.json``.

    Several runs become one model returning their mean logits; they must share the scheme and the
    preprocessing (image size, CLAHE). The written model is run once on a 3-image batch and compared
    with PyTorch (``max_abs_logit_diff`` in the sidecar). Returns the sidecar dict.
    """
    if fmt not in FORMATS:
        raise KneelibError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        check_opset(opset)
    out = Path(out)
    if out.is_dir():
        raise KneelibError(f"{out}: is a directory; --out needs a model file name")
    runs = load_runs(run_dirs, device="cpu")
    preprocessing = {r.preprocessing for r in runs}
    if len(preprocessing) > 1:
        listed = ", ".join(f"{r.name}: {r.image_size} px, CLAHE {'on' if r.clahe else 'off'}" for r in runs)
        raise KneelibError(f"runs cannot share one exported model: their preprocessing differs ({listed})")
    size, clahe = runs[0].preprocessing
    module = EnsembleLogits([r.model for r in runs]).eval()
    example = torch.zeros(2, 3, size, size)
    check = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module(check).numpy()
    opset_written: int | None = None
    with atomic.atomic_path(out) as tmp:
        if fmt == "onnx":
            opset_written = _export_onnx(module, example, tmp, opset)
            if opset_written != opset:
                raise KneelibError(f"{out}: asked for ONNX opset {opset}, the exporter wrote {opset_written}")
        else:
            _export_torchscript(module, example, tmp)
        diff = float(np.abs(_load_runner(tmp, fmt, threads=None)(check.numpy()) - expected).max())
        if not diff <= VERIFY_TOLERANCE:
            raise KneelibError(f"{out}: exported {fmt} model disagrees with PyTorch "
                               f"(max |logit diff| {diff:.3g})")
        digest = _sha256(tmp)
    mean, std = NORMALIZE
    scheme = runs[0].scheme
    sidecar = {
        "format": fmt,
        "model_file": out.name,
        "sha256": digest,
        "opset": opset_written,
        "kneelib_version": __version__,
        "torch_version": torch.__version__,
        "scheme": scheme.name,
        "classes": list(scheme.class_names),
        "image_size": size,
        "clahe": clahe,
        "normalization": {"mean": mean, "std": std},
        "input": {"name": INPUT_NAME, "shape": ["N", 3, size, size], "dtype": "float32",
                  "preprocessing": f"gray uint8 resized to {size}x{size}, CLAHE {'on' if clahe else 'off'}, "
                                   f"x/255, (x - {mean}) / {std}, copied to 3 channels"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", scheme.num_classes],
                   "meaning": "mean of the members' logits; softmax gives the class probabilities"},
        "members": [{"name": r.name, "arch": str(r.config["arch"]),
                     "checkpoint": str((r.path / CHECKPOINT_FILE).resolve())} for r in runs],
        "max_abs_logit_diff": diff,
    }
    write_json(sidecar_path(out), sidecar)
    return sidecar


def _load_runner(path: Path, fmt: str, *, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function float32 batch → logits for a model file; KneelibError if it cannot be loaded."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise KneelibError(f"{path}: cannot load the ONNX model ({_first_line(exc)})") from None
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.jit.load raises RuntimeError and others
        raise KneelibError(f"{path}: cannot load the TorchScript model ({_first_line(exc)})") from None
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return run


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        raise KneelibError(f"{side}: sidecar not found (export writes it next to {path.name})")
    meta = read_json(side)
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise KneelibError(f"{side}: not a kneelib export sidecar (lacks {', '.join(missing)})")
    check_fields(meta, side, _SIDECAR_RULES, required=_REQUIRED)
    norm = meta["normalization"]
    if (norm.get("mean"), norm.get("std")) != NORMALIZE:
        raise KneelibError(f"{side}: field 'normalization' {norm} differs from this kneelib's mean/std {NORMALIZE}")
    scheme = get_scheme(meta["scheme"])
    if list(meta["classes"]) != list(scheme.class_names):
        raise KneelibError(f"{side}: field 'classes': {meta['classes']} do not match scheme {scheme.name} "
                           f"{list(scheme.class_names)}")
    return meta


@dataclass
class ExportedModel:
    """An exported model file and its sidecar, ready to grade images."""

    path: Path
    meta: dict[str, Any]
    _runner: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None) -> ExportedModel:
        """Read ``path`` and ``path.json``; check the sha256, then load with onnxruntime or torch.jit.

        ``threads``: onnxruntime intra-op threads (default: ``torch.get_num_threads()``).
        """
        path = Path(path)
        if not path.is_file():
            raise KneelibError(f"{path}: exported model not found")
        meta = _read_sidecar(path)
        if _sha256(path) != meta["sha256"]:
            raise KneelibError(f"{path}: sha256 differs from {sidecar_path(path).name} (model file changed "
                               "or corrupt; export again)")
        return cls(path, meta, _load_runner(path, meta["format"], threads=threads))

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def clahe(self) -> bool:
        return bool(self.meta["clahe"])

    @property
    def format(self) -> str:
        return str(self.meta["format"])

    def logits(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        """Logits (N, C) for uint8 grayscale arrays or image paths (the ensemble's mean logits)."""
        if batch_size < 1:
            raise KneelibError(f"batch size must be at least 1, got {batch_size}")
        images = list(images)
        out = [
            self._runner(input_batch(images[i:i + batch_size], image_size=self.image_size,
                                     clahe=self.clahe).numpy())
            for i in range(0, len(images), batch_size)
        ]
        if not out:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        logits = np.concatenate(out)
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise KneelibError(f"{self.path}: model returned shape {logits.shape}, expected (N, "
                               f"{len(self.class_names)})")
        return logits

    def probabilities(self, images: Sequence[ImageSource], **kwargs: Any) -> np.ndarray:
        """Class probabilities (N, C): softmax of :meth:`logits` (as :class:`kneelib.serve.predict.Predictor`)."""
        return softmax(self.logits(images, **kwargs))
