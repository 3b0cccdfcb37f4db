"""Two trainings sharing the cores: how much slower is each than alone?

Runs ``kneelib train`` (ResNet-18, ``--epochs 1 --limit N --image-size 64``, the scratch recipe, on
``../shared/data/kneeKL224``) once alone and then twice side by side, in each mode:

* ``fixed``: ``--threads 2`` (a fixed count: kneelib keeps it; OpenMP's default waiting);
* ``passive``: ``--threads 2`` with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep instead of spinning);
* ``governed``: no ``--threads``: kneelib sizes the threads to the cores other processes leave free
  (:mod:`kneelib.train.threads`).

An untimed run first warms the page cache and the imports; then ``--repeats`` rounds, the modes interleaved.
Prints and writes the wall seconds and the ratio of the medians ``side by side / alone`` (2.0 is fair sharing).

    python benchmarks/shared_cores.py --json benchmarks/results/shared_cores_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "kneeKL224"
MODES = {"fixed": (["--threads", "2"], {}), "passive": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
         "governed": ([], {})}


def train_command(out: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "kneelib", "train", "--data", str(DATA), "--arch", args.arch, "--recipe", "scratch",
            "--epochs", "1", "--limit", str(args.limit), "--image-size", "64", "--precision", args.precision,
            *extra, "--out", str(out), "--quiet"]


def timed(n: int, mode: str, args: argparse.Namespace, scratch: Path) -> float:
    """Wall seconds of ``n`` identical trainings started together (until the last one ends)."""
    extra, env_extra = MODES[mode]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env_extra
    tic = time.perf_counter()
    procs = [subprocess.Popen(train_command(scratch / f"{mode}-{n}-{i}-{time.time_ns()}", args, extra), env=env)
             for i in range(n)]
    if any(p.wait() for p in procs):
        raise SystemExit(f"a training failed ({mode})")
    return time.perf_counter() - tic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--limit", type=int, default=1500)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="rounds, each mode alone then paired, interleaved")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"conditions": {"command": " ".join(train_command(Path("RUN"), args, ["[--threads 2]"])[1:]),
                             "cpus": os.cpu_count(), "repeats": args.repeats}, "modes": {}}
    times: dict[str, dict[str, list[float]]] = {m: {"alone": [], "pair": []} for m in args.modes}
    with tempfile.TemporaryDirectory() as scratch:
        timed(1, args.modes[0], args, Path(scratch))  # warm the page cache and the imports first, untimed
        for _ in range(args.repeats):
            for mode in args.modes:
                times[mode]["alone"].append(timed(1, mode, args, Path(scratch)))
                times[mode]["pair"].append(timed(2, mode, args, Path(scratch)))
                print(f"{mode}: alone {times[mode]['alone'][-1]:.1f} s, two side by side "
                      f"{times[mode]['pair'][-1]:.1f} s", flush=True)
    for mode, t in times.items():
        alone, pair = statistics.median(t["alone"]), statistics.median(t["pair"])
        report["modes"][mode] = {"alone_s": [round(x, 1) for x in t["alone"]],
                                 "two_side_by_side_s": [round(x, 1) for x in t["pair"]],
                                 "ratio_of_medians": round(pair / alone, 2)}
        print(f"{mode}: median alone {alone:.1f} s, side by side {pair:.1f} s, {pair / alone:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
