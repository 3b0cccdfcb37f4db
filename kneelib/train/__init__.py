"""kneelib.train: fit one run of a recipe → ``RUN_DIR`` (config.json, history.csv, best.pt, last.pt).

``TrainConfig`` (:mod:`~kneelib.train.config`) is the one hyperparameter dataclass (what is trained), its named
presets the recipes of :mod:`~kneelib.train.recipes`; ``Runtime`` (same module) says where and how fast it runs.
:func:`train` (:mod:`~kneelib.train.loop`) runs it — resumable, deterministic on CPU — and returns a
``TrainResult``: :mod:`~kneelib.train.build` builds the model, optimiser, schedule and steps
(:mod:`~kneelib.train.optim`, :mod:`~kneelib.train.steps`), :mod:`~kneelib.train.epoch` runs one pass,
:mod:`~kneelib.train.run_dir` keeps the run directory (state, lock, files; :mod:`~kneelib.train.checkpoint`
writes each atomically); :mod:`~kneelib.train.runtime` resolves devices, seeds RNGs and records versions.

May import: :mod:`kneelib.data`, :mod:`kneelib.models`, ``errors``, ``atomic``.
"""

from kneelib.train import checkpoint, runtime
from kneelib.train.config import (
    Runtime,
    TrainConfig,
    config_mismatch,
    data_hash,
    limit_samples,
    run_config,
    run_name,
)
from kneelib.train.loop import TrainResult, run_status, train

__all__ = [
    "Runtime",
    "TrainConfig",
    "TrainResult",
    "checkpoint",
    "config_mismatch",
    "data_hash",
    "limit_samples",
    "run_config",
    "run_name",
    "run_status",
    "runtime",
    "train",
]
