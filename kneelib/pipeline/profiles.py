"""Sweep profiles (the grid and the recipe of a ``reproduce`` run) and where a sweep writes its files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kneelib.errors import KneelibError

ALL_ARCHS = (
    "resnet18", "resnet34", "resnet50", "densenet121",
    "se_resnet18", "se_resnet34", "se_resnet50", "se_densenet121",
)


@dataclass(frozen=True)
class Profile:
    """Everything a sweep needs besides the data: the grid and the training recipe."""

    name: str
    archs: tuple[str, ...] = ALL_ARCHS
    schemes: tuple[str, ...] = ("kl5", "kl4")
    seeds: tuple[int, ...] = (21, 42, 84)
    epochs: int = 75
    image_size: int = 224
    batch_size: int = 32
    weights: str = "imagenet"
    recipe: str = "paper"  # training recipe (kneelib.train.recipes): paper, or scratch for random weights
    # TrainConfig fields changed from the recipe, as (name, value) pairs (e.g. what a --hours budget chose)
    recipe_changes: tuple[tuple[str, Any], ...] = ()
    limit: int = 0  # 0 = every image
    clahe: bool = False
    synth_per_grade: int = 0  # > 0: generate synthetic data when no --data is given
    synth_size: int = 224
    synth_signs: float = 1.0  # KL sign strength of the synthetic data (1 = realistic)
    synth_bilateral: int = 0  # synthetic bilateral radiographs for 06_predict's localisation demo
    featured_arch: str = "se_densenet121"  # the ensemble of Table 6 and Figs. 5-7
    featured_scheme: str = "kl4"
    threads: int = 0  # torch threads per run (0 = torch's default: the machine's cores, governed)
    jobs: int = 0  # training notebooks (one model, all seeds) executed at once (0: resolve_jobs decides)
    pin_cpu: bool = False  # pin every library's CPU kernels to AVX2 (kneelib.cpu_pin): same results on any x86-64
    cell_timeout: int = 0  # seconds one notebook cell may run (0 = no limit): a hung kernel fails the sweep
    split: str = "test"  # the split the tables are computed on
    # "given": train, select and report on the data's own train/val/test splits. "held-out" (for data whose
    # test split is withheld): train on train' and select on val', a patient-grouped eighth of the train split,
    # and report on the official val split (kneelib.data.split.held_out_split); data with a test split keeps
    # its own splits.
    selection: str = "given"
    project: bool = False  # before training, print the sweep's projected time (a few timed steps per arch)
    ray_num_cpus: float = 1  # --executor ray: CPUs each training notebook asks Ray for
    ray_num_gpus: float = 0  # --executor ray: GPUs each asks for (a fraction: several runs share one GPU)


PROFILES: dict[str, Profile] = {
    # The README's main job: synthetic data, all 48 runs, tiny images, a few epochs, on a laptop CPU.
    # Single-threaded runs, one more at a time than the machine has cores (resolve_jobs): one run's start-up
    # (kernel, imports) and evaluation overlap the others' training (docs/reproducibility.md). Each run's
    # numbers do not depend on how many run beside it. Batch 8 gives the from-scratch models more steps per
    # image seen. At 64 px realistic KL signs are a pixel or two wide: the smoke data draws them 3x stronger.
    "smoke": Profile(
        name="smoke", epochs=3, image_size=64, batch_size=8, weights="none",
        synth_per_grade=45, synth_size=64, synth_signs=3.0, synth_bilateral=3, threads=1,
        cell_timeout=900, pin_cpu=True,
    ),
    # The paper's settings on a real data directory: 224 px, 75 epochs, ImageNet weights, 48 runs (GPU).
    "paper": Profile(name="paper", ray_num_gpus=0.25),
    # The paper's grid and sizes from random weights (no ImageNet available): the scratch recipe (GPU).
    "scratch": Profile(name="scratch", weights="none", recipe="scratch", ray_num_gpus=0.25),
    # The paper's grid on a real data directory without a GPU: the scratch recipe at the image size and epochs a
    # 2-core CPU trains in about an hour per seed (both scales; --hours chooses them for a budget instead), one
    # run at a time on all the machine's cores (governed), bf16 where the processor has it; selected on val',
    # reported on the official val split when the test split is withheld.
    "cpu": Profile(name="cpu", epochs=4, image_size=64, weights="none", recipe="scratch", jobs=1,
                   selection="held-out", project=True),
}


#: GPU memory one training run may take at batch 32, 224 px under bf16 autocast, with its data on the device and
#: its train and eval CUDA graphs: an upper bound for the eight architectures, to be replaced by what
#: ``benchmarks/gpu_check.sh`` measures (not yet run: no GPU in development): memory.json's ``per_run_max_gib``,
#: a real run's max_memory_reserved plus its CUDA context (config.json's gpu_memory), checked with two at once.
RUN_GPU_GIB = 8.0


def resolve_jobs(profile: Profile, device: str = "auto", *, free_gpu_bytes: int | None = None) -> int:
    """How many training notebooks run at once: the profile's ``jobs`` when set; single-threaded CPU runs (the
    smoke profile): one more than the machine's cores, at most one per model; else, on a GPU, as many
    as fit in 90% of its free memory (:data:`RUN_GPU_GIB` each) and half the CPU cores (each run's
    Python process needs a core to launch its kernels), at most one per model; else 1."""
    import os

    if profile.jobs > 0:
        return profile.jobs
    models = len(profile.archs) * len(profile.schemes)
    if profile.threads == 1 and not profile.ray_num_gpus:  # single-threaded CPU runs: the cores, plus one
        return max(1, min((os.cpu_count() or 1) + 1, models))
    if free_gpu_bytes is None:
        free_gpu_bytes = _free_gpu_bytes(device)
    if not free_gpu_bytes:
        return 1

    by_memory = int(0.9 * free_gpu_bytes // (RUN_GPU_GIB * 2**30))
    by_cpu = max(1, (os.cpu_count() or 2) // 2)
    return max(1, min(by_memory, by_cpu, models))


def parallel_runs(profile: Profile, jobs: int, *, on_gpu: bool = False) -> int:
    """How many of ``jobs`` concurrent runs a projection counts as running in parallel. On a CPU, runs that each
    use every core (``threads`` 0, the governor sharing them) count as one: two side by side take about 1.8× one
    alone, so two at once gain only ~10%; single-threaded runs, and runs on a GPU, count as ``jobs``."""
    return 1 if profile.threads == 0 and not on_gpu else max(1, jobs)


def _free_gpu_bytes(device: str) -> int:
    """Free memory of the first CUDA device when ``device`` is auto or cuda and one exists, else 0."""
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        return 0
    import torch

    if not torch.cuda.is_available():
        return 0
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    return int(torch.cuda.mem_get_info(index)[0])


#: The label schemes a sweep trains and the splits its tables can be computed on.
SWEEP_SCHEMES = ("kl5", "kl4")
SWEEP_SPLITS = ("train", "val", "test")
#: The smallest input the models train on (kneelib.train.config) and a bound on what a sweep could hold.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 1024


def _first_bad(values: tuple, allowed: tuple) -> Any:
    """The first of ``values`` not in ``allowed``, or None."""
    return next((v for v in values if v not in allowed), None)


def check_profile(profile: Profile) -> Profile:
    """``profile`` when its grid and settings can run; else KneelibError naming the first bad setting (checked
    before a sweep draws data or starts a notebook)."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise KneelibError(message)

    bad = _first_bad(profile.archs, ALL_ARCHS)
    need(bad is None, f"--archs: unknown architecture {bad!r} (choose from {', '.join(ALL_ARCHS)})")
    bad = _first_bad(profile.schemes, SWEEP_SCHEMES)
    need(bad is None, f"--schemes: unknown label scheme {bad!r} (choose from {', '.join(SWEEP_SCHEMES)})")
    need(all(isinstance(s, int) and 0 <= s < 2**32 for s in profile.seeds),
         f"--seeds: seeds are integers from 0 to 2**32 - 1, got {list(profile.seeds)}")
    for option, values in (("--archs", profile.archs), ("--schemes", profile.schemes), ("--seeds", profile.seeds)):
        need(len(values) > 0, f"{option}: the grid needs at least one")
        need(len(set(values)) == len(values), f"{option}: given more than once in {list(values)}")
    need(profile.epochs >= 1, f"--epochs: must be at least 1, got {profile.epochs}")
    need(MIN_IMAGE_SIZE <= profile.image_size <= MAX_IMAGE_SIZE,
         f"--image-size: must lie in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px, got {profile.image_size}")
    need(profile.split in SWEEP_SPLITS,
         f"--split: unknown split {profile.split!r} (choose from {', '.join(SWEEP_SPLITS)})")
    need(profile.jobs >= 0, f"--jobs: must be at least 1, got {profile.jobs}")
    return profile


def check_device(device: str) -> str:
    """``device`` when it names one a sweep can run on (auto, cpu, cuda, cuda:N); else KneelibError."""
    name = device.lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return device
    raise KneelibError(f"--device: unknown device {device!r} (choose auto, cpu or cuda)")


def get_profile(name: str, **overrides: Any) -> Profile:
    """A named profile with optional overrides (``None`` values are ignored)."""
    if name not in PROFILES:
        raise KneelibError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Profile)})
    if unknown:
        raise KneelibError(f"unknown profile setting(s): {', '.join(unknown)}")
    if changes.get("jobs", 1) < 1:  # 0 is the profiles' "decide for me", not a user's choice
        raise KneelibError(f"--jobs: must be at least 1, got {changes['jobs']}")
    profile = check_profile(dataclasses.replace(PROFILES[name], **changes))
    # The featured ensemble (Table 6, Figs. 5-7) must be part of the grid: else take the grid's last.
    if profile.featured_arch not in profile.archs:
        profile = dataclasses.replace(profile, featured_arch=profile.archs[-1])
    if profile.featured_scheme not in profile.schemes:
        profile = dataclasses.replace(profile, featured_scheme=profile.schemes[-1])
    return profile


@dataclass(frozen=True)
class Layout:
    """Where a sweep writes: ``OUT/{data,runs,eval,notebooks,tables,figures}``."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def eval(self) -> Path:
        return self.out / "eval"

    @property
    def notebooks(self) -> Path:
        return self.out / "notebooks"

    @property
    def tables(self) -> Path:
        return self.out / "tables"

    @property
    def figures(self) -> Path:
        return self.out / "figures"
