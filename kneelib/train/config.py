"""What a run trains and where it runs: :class:`TrainConfig` (the recipe: every hyperparameter, defaults the
paper's) and :class:`Runtime` (device, threads, loader workers, data placement, CUDA graphs, precision)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kneelib.errors import KneelibError
from kneelib.train.recipes import OPTIMIZERS, SCHEDULES, recipe_fields

#: ``loss`` choices (as kneelib.train.losses.LOSSES, kept here: that module loads torch).
LOSSES = ("cross_entropy", "class_weighted", "corn")

#: ``precision`` choices (kept here, not imported from kneelib.train.runtime, which loads torch).
PRECISIONS = ("auto", "fp32", "bf16")

if TYPE_CHECKING:  # heavy modules (torch, cv2) load lazily: the CLI imports this for its defaults
    from kneelib.data.layout import Sample
    from kneelib.data.schemes import Scheme

__all__ = ["TrainConfig", "Runtime", "run_config", "config_mismatch", "data_hash", "limit_samples"]

#: Runtime fields that change what a run computes (checked on ``--resume`` with the recipe); the others may change.
RESUME_CHECKED_RUNTIME = ("precision",)
#: Options removed from the recipe, with the value every run that lacks them was trained with.
REMOVED_FIELDS: dict[str, Any] = {"prior_bias": False}


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (what is trained); the defaults are the paper's recipe.

    Adam (``lr`` 1e-3, ``weight_decay`` 1e-4), batch 32, cross-entropy, the learning rate multiplied
    by ``lr_gamma`` 0.95 every ``lr_step`` 5 epochs, 75 epochs, the paper's augmentation on the train
    split only, the checkpoint of the best validation accuracy kept (ties keep the earlier epoch). Where and how
    fast it runs is :class:`Runtime`'s.
    """

    arch: str
    scheme: str = "kl5"
    seed: int = 21
    epochs: int = 75
    image_size: int = 224
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_step: int = 5
    lr_gamma: float = 0.95
    recipe: str = "paper"  # the named recipe these fields came from (kneelib.train.recipes)
    optimizer: str = "adam"  # adam (L2 weight decay, the paper) or adamw (decoupled)
    schedule: str = "step"  # step (lr x lr_gamma every lr_step epochs, the paper) or cosine (per batch)
    warmup_epochs: int = 0  # cosine: linear warm-up over this many epochs (at most half the run)
    augment: float = 1.0  # augmentation strength: 1 the paper's, 0 the horizontal flip alone
    loss: str = "cross_entropy"  # cross-entropy (the paper's), class-weighted or corn (ordinal; kneelib.train.losses)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    balanced: bool = False  # draw training images class-balanced (with replacement)
    weights: str | None = None
    clahe: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.weights, os.PathLike):
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if isinstance(self.weights, str) and self.weights.lower() in ("", "none"):
            object.__setattr__(self, "weights", None)
        elif isinstance(self.weights, str) and self.weights.lower() == "imagenet":
            object.__setattr__(self, "weights", "imagenet")
        elif self.weights is not None:  # a checkpoint path: absolute, so resume works from anywhere
            object.__setattr__(self, "weights", str(Path(self.weights).expanduser().resolve()))

    def validate(self) -> TrainConfig:
        """KneelibError (one line) for an unknown arch/scheme or an out-of-range number."""
        from kneelib.data.schemes import get_scheme
        from kneelib.models.registry import get_spec

        get_spec(self.arch)
        get_scheme(self.scheme)
        recipe_fields(self.recipe)
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (64 <= self.image_size <= 1024, "image size must lie in 64..1024 px"),
            (self.batch_size >= 2, "batch size must be at least 2 (batch norm)"),
            (self.lr > 0, "learning rate must be positive"),
            (self.weight_decay >= 0, "weight decay must not be negative"),
            (self.lr_step >= 1, "lr step must be at least 1"),
            (0 < self.lr_gamma <= 1, "lr gamma must be in (0, 1]"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.warmup_epochs >= 0, "warm-up epochs must not be negative"),
            (0 <= self.augment <= 2, "augmentation strength must be in [0, 2]"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (self.loss != "corn" or self.label_smoothing == 0, "label smoothing does not apply to the corn loss"),
            (not (self.balanced and self.loss == "class_weighted"),
             "balanced sampling and the class-weighted loss each correct the grades' frequencies: choose one"),
            (0 <= self.ema_decay < 1, "EMA decay must be in [0, 1)"),
            (self.limit is None or self.limit >= 1, "limit must be at least 1"),
        ]
        _raise_first_failed(checks)
        return self

    @classmethod
    def from_recipe(cls, recipe: str = "paper", **fields: Any) -> TrainConfig:
        """A config of a named recipe (:data:`kneelib.train.recipes.RECIPES`, with the changes of ``arch``'s
        family, :data:`~kneelib.train.recipes.FAMILY_FIELDS`); ``fields`` override it."""
        return cls(**{**recipe_fields(recipe, fields.get("arch")), "recipe": recipe, **fields})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Runtime:
    """Where and how fast a run executes; none of it changes the numbers but ``precision`` (and, bit-wise on a
    CPU, the thread count ``config.json`` records)."""

    device: str = "auto"  # auto (cuda when available), cpu or cuda[:N]
    workers: int | None = None  # DataLoader worker processes (None: 0 on a CPU, up to 8 with a GPU)
    threads: int | None = None  # torch CPU threads for this run (None: torch's, adapted to other processes)
    data_on_device: bool | None = None  # images on the device, batched augmentation (None: on CUDA only)
    cuda_graphs: bool = True  # on CUDA, replay each full-batch step from a CUDA graph
    precision: str = "auto"  # auto, fp32 or bf16 autocast (kneelib.train.runtime.autocast_dtype)

    def validate(self) -> Runtime:
        """KneelibError (one line) for an out-of-range number or an unknown precision."""
        _raise_first_failed([
            (self.workers is None or self.workers >= 0, "workers must not be negative"),
            (self.threads is None or self.threads >= 1, "threads must be at least 1"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
        ])
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)


def _raise_first_failed(checks: Sequence[tuple[bool, str]]) -> None:
    """KneelibError with the message of the first check that is False."""
    for ok, message in checks:
        if not ok:
            raise KneelibError(message)


def run_name(arch: str, scheme: str, seed: int) -> str:
    """The folder name of one training run of a sweep (``OUT/runs/<arch>_<scheme>_s<seed>``)."""
    return f"{arch}_{scheme}_s{seed}"


def data_hash(splits: Mapping[str, Sequence[Sample]], root: str | os.PathLike) -> str:
    """SHA-256 over the sorted (split, relative path, size in bytes, grade) of every sample used."""
    root = Path(root)
    base = root if root.is_dir() else root.parent
    rows = []
    for split, samples in splits.items():
        for s in samples:
            path = Path(s.path)
            try:
                rel = path.resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                rel = path.resolve().as_posix()
            rows.append(f"{split}\t{rel}\t{path.stat().st_size}\t{s.grade}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def limit_samples(samples: Sequence[Sample], limit: int | None, *, seed: int = 0) -> list[Sample]:
    """At most ``limit`` samples, stratified by grade (proportional), deterministic for ``seed``.

    Each grade's samples are shuffled with ``seed``; every sample gets the rank fraction
    ``(i + 0.5) / n_grade`` and the ``limit`` smallest are kept, so grades keep their proportions.
    The result is in the original (sorted) order.
    """
    if limit is None or limit >= len(samples):
        return list(samples)
    rng = random.Random(seed)
    by_grade: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_grade.setdefault(s.grade, []).append(i)
    ranked = []
    for grade, idx in sorted(by_grade.items()):
        rng.shuffle(idx)
        ranked += [((r + 0.5) / len(idx), grade, i) for r, i in enumerate(idx)]
    keep = sorted(i for _, _, i in sorted(ranked)[:limit])
    return [samples[i] for i in keep]


def run_config(config: TrainConfig, runtime: Runtime, *, scheme: Scheme, data_dir: str | os.PathLike,
               data_hash: str, device: str, threads: int, workers: int, versions: Mapping[str, Any],
               git_commit: str | None, git_dirty: bool | None,
               counts: Mapping[str, int]) -> dict[str, Any]:
    """The ``config.json`` of a run: one flat object of the recipe, the runtime (``device``, ``workers`` and
    ``threads`` as resolved) and everything needed to reproduce or reuse it."""
    from kneelib import cpu_pin
    from kneelib.data.transforms import CLAHE_CLIP_LIMIT, CLAHE_TILE_GRID, NORMALIZE

    mean, std = NORMALIZE
    return {
        **config.to_dict(),
        **runtime.to_dict(),
        "class_names": list(scheme.class_names),
        "num_classes": scheme.num_classes,
        "normalize": {"mean": mean, "std": std},
        "clahe_params": {"clip_limit": CLAHE_CLIP_LIMIT, "tile_grid": list(CLAHE_TILE_GRID)},
        "augmentation": ("paper (random order: hflip, affine ±10° scale 0.9-1.1, jitter 0.33)"
                         if config.augment == 1 else f"paper at strength {config.augment:g}" if config.augment
                         else "horizontal flip only"),
        "selection": "best val accuracy (ties keep the earlier epoch)",
        "data_dir": str(Path(data_dir).resolve()),
        "data_hash": data_hash,
        "split_protocol": "given: train and val splits of the data source",
        "counts": dict(counts),
        "device": device,
        "workers": workers,
        "threads": threads,  # torch CPU threads actually used (results depend on it, bit-wise)
        "cpu_kernels": cpu_pin.describe(),  # the processor's SIMD level and kneelib's AVX2 pin (kneelib.cpu_pin)
        "versions": dict(versions),
        "git_commit": git_commit,
        "git_dirty": git_dirty,
    }


def config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: saved → current`` for every hyperparameter (recipe, precision, removed options and the data hash)
    that differs; the rest of the runtime may change on ``--resume``."""
    fields = dataclasses.fields(TrainConfig) + tuple(f for f in dataclasses.fields(Runtime)
                                                     if f.name in RESUME_CHECKED_RUNTIME)
    # A run written before a field existed (or after it was removed) was trained with that field's default.
    defaults = {**{f.name: f.default for f in fields if f.default is not dataclasses.MISSING}, **REMOVED_FIELDS}
    keys = [f.name for f in fields] + list(REMOVED_FIELDS) + ["data_hash"]
    return [f"{k}: {saved.get(k, defaults.get(k))!r} → {current.get(k, defaults.get(k))!r}" for k in keys
            if saved.get(k, defaults.get(k)) != current.get(k, defaults.get(k))]
