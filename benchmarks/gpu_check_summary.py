"""``benchmarks/gpu_check.sh``'s summaries of its ``kneelib train`` runs, rewritten after every run.

    python benchmarks/gpu_check_summary.py OUT_DIR WORK_DIR

``WORK_DIR/prior/<arch>/`` (one run each, alone on the GPU) → ``OUT_DIR/prior.json``: validation accuracy and
seconds per epoch, how the steps ran, and the run's GPU footprint (``gpu_memory`` in its ``config.json``:
``kneelib.train.runtime.gpu_footprint`` after epoch 1, graphs, the eager last batch and evaluation included).

``WORK_DIR/pair/<arch>/`` (two runs at once on the one GPU), ``WORK_DIR/baseline_mib`` (the device's used
memory before the check started, nvidia-smi) and ``WORK_DIR/pair_samples_mib`` (nvidia-smi's used memory every
200 ms while the pair ran) → ``OUT_DIR/memory.json``: what one run needs alone (``max_reserved`` plus its CUDA
context and library memory, less what the device used before), the pair's peak against the sum of its two runs
alone, each pair run's epoch time against its time alone, and what ``kneelib.pipeline.resolve_jobs`` would
choose for the ``paper`` profile with ``RUN_GPU_GIB`` and with the measured need.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _run(folder: Path) -> dict[str, Any]:
    history = folder / "history.csv"
    rows = list(csv.DictReader(history.open())) if history.is_file() else []
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    return {"val_acc": [float(r["val_acc"]) for r in rows], "train_loss": [float(r["train_loss"]) for r in rows],
            "seconds": [float(r["seconds"]) for r in rows], "execution": config.get("execution"),
            "counts": config.get("counts"), "gpu_memory": config.get("gpu_memory")}


def _number(path: Path) -> float | None:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def summarize(out: Path, work: Path) -> dict[str, Any]:
    prior = {run.name: _run(run) for run in sorted((work / "prior").glob("*")) if run.is_dir()}
    (out / "prior.json").write_text(json.dumps(prior, indent=1) + "\n")
    baseline_mib = _number(work / "baseline_mib")
    base_gib = (baseline_mib or 0.0) / 1024

    def alone_gib(memory: dict[str, float] | None) -> float | None:
        if not memory:
            return None
        return round(memory["max_reserved"] + memory["outside_allocator"] - base_gib, 2)

    alone = {arch: alone_gib(run["gpu_memory"]) for arch, run in prior.items()}
    measured = [v for v in alone.values() if v is not None]
    pair = {run.name: _run(run) for run in sorted((work / "pair").glob("*")) if run.is_dir()}
    samples = []
    if (work / "pair_samples_mib").is_file():
        for line in (work / "pair_samples_mib").read_text().split():
            try:
                samples.append(float(line))
            except ValueError:
                pass
    pair_report: dict[str, Any] = {
        "archs": list(pair), "finished": {a: len(r["seconds"]) for a, r in pair.items()},
        "peak_device_used_gib": round(max(samples) / 1024 - base_gib, 2) if samples else None,
        "sum_alone_gib": round(sum(alone[a] for a in pair if alone.get(a) is not None), 2)
        if pair and all(alone.get(a) is not None for a in pair) else None,
        "max_reserved_gib": {a: (r["gpu_memory"] or {}).get("max_reserved") for a, r in pair.items()},
        "epoch1_seconds": {a: (r["seconds"] or [None])[0] for a, r in pair.items()},
        "epoch1_seconds_alone": {a: (prior.get(a, {}).get("seconds") or [None])[0] for a in pair}}
    report: dict[str, Any] = {"baseline_used_mib": baseline_mib, "per_run_alone_gib": alone,
                              "per_run_max_gib": max(measured) if measured else None, "pair": pair_report}
    try:
        sys.path.insert(0, str(REPO))
        from kneelib.pipeline import profiles

        report["RUN_GPU_GIB"] = profiles.RUN_GPU_GIB
        totals = [r["gpu_memory"]["total"] for r in prior.values() if r.get("gpu_memory")]
        if totals and measured:
            free = int((totals[0] - base_gib) * 2**30)
            paper = profiles.get_profile("paper")
            report["resolve_jobs_paper"] = {"free_gib": round(free / 2**30, 1),
                                            "with_RUN_GPU_GIB": profiles.resolve_jobs(paper, free_gpu_bytes=free),
                                            "by_measured_memory": int(0.9 * free // (max(measured) * 2**30))}
    except Exception as exc:  # noqa: BLE001 - the summary must not stop the check
        report["resolve_jobs_error"] = f"{type(exc).__name__}: {exc}"
    (out / "memory.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    out_dir, work_dir = Path(sys.argv[1]), Path(sys.argv[2])
    result = summarize(out_dir, work_dir)
    for arch, run in json.loads((out_dir / "prior.json").read_text()).items():
        print(f"  {arch}: val acc {run['val_acc']}, seconds {run['seconds']}, "
              f"{(run['execution'] or {}).get('step')}, alone {result['per_run_alone_gib'].get(arch)} GiB")
    if result["pair"]["archs"]:
        print(f"  pair: {json.dumps(result['pair'])}")
