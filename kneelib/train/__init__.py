"""kneelib.train: fit one run of a recipe → ``RUN_DIR`` (config.json, history.csv, best.pt, last.pt).

``TrainConfig`` (:mod:`~kneelib.train.config`) is the one hyperparameter dataclass, its named presets the
recipes of :mod:`~kneelib.train.recipes`; :mod:`~kneelib.train.optim` builds the optimiser, schedule and weight
average a config asks for; :func:`train`
(:mod:`~kneelib.train.loop`) runs it — resumable, deterministic on CPU; :mod:`~kneelib.train.checkpoint`
writes and reads the run files atomically; :mod:`~kneelib.train.runtime` resolves devices, seeds RNGs
and records versions.

May import: :mod:`kneelib.data`, :mod:`kneelib.models`, ``errors``, ``atomic``.
"""

from kneelib.train import checkpoint, runtime
from kneelib.train.config import (
    TrainConfig,
    config_mismatch,
    data_hash,
    limit_samples,
    run_config,
    run_name,
)
from kneelib.train.loop import run_status, train

__all__ = [
    "TrainConfig",
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
