"""Two trainings sharing the cores: how much slower is each than alone, per OpenMP wait policy?

Runs ``kneelib train`` (ResNet-18, ``--epochs 1 --limit N --image-size 64 --threads 2``, the scratch recipe, on
``../shared/data/kneeKL224``) once alone and then twice side by side, for each ``OMP_WAIT_POLICY`` given
(``default`` leaves the variable unset, which is what kneelib did before it set ``PASSIVE``). Prints and writes
the wall seconds and the ratio ``side-by-side / alone`` (2.0 is fair sharing of the cores).

    python benchmarks/shared_cores.py --json benchmarks/results/shared_cores.json
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


def train_command(out: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "kneelib", "train", "--data", str(DATA), "--arch", args.arch, "--recipe", "scratch",
            "--epochs", "1", "--limit", str(args.limit), "--image-size", "64", "--threads", str(args.threads),
            "--precision", args.precision, "--out", str(out), "--quiet"]


def timed(n: int, policy: str, args: argparse.Namespace, scratch: Path) -> float:
    """Wall seconds of ``n`` identical trainings started together (until the last one ends)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KNEELIB_OMP_WAIT_POLICY")}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    else:
        env["KNEELIB_OMP_WAIT_POLICY"] = "default"  # kneelib leaves OpenMP's own default alone
    tic = time.perf_counter()
    procs = [subprocess.Popen(train_command(scratch / f"{policy}-{n}-{i}-{time.time_ns()}", args), env=env)
             for i in range(n)]
    if any(p.wait() for p in procs):
        raise SystemExit(f"a training failed (policy {policy})")
    return time.perf_counter() - tic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=["default", "PASSIVE"])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--limit", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="rounds, each policy alone then paired, interleaved")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"conditions": {"command": " ".join(train_command(Path("RUN"), args)[1:]), "cpus": os.cpu_count()},
              "policies": {}}
    times: dict[str, dict[str, list[float]]] = {p: {"alone": [], "pair": []} for p in args.policies}
    with tempfile.TemporaryDirectory() as scratch:
        timed(1, args.policies[0], args, Path(scratch))  # warm the page cache and the imports first, untimed
        for _ in range(args.repeats):
            for policy in args.policies:
                times[policy]["alone"].append(timed(1, policy, args, Path(scratch)))
                times[policy]["pair"].append(timed(2, policy, args, Path(scratch)))
                print(f"OMP_WAIT_POLICY={policy}: alone {times[policy]['alone'][-1]:.1f} s, two side by side "
                      f"{times[policy]['pair'][-1]:.1f} s", flush=True)
    for policy, t in times.items():
        alone, pair = statistics.median(t["alone"]), statistics.median(t["pair"])
        report["policies"][policy] = {"alone_s": [round(x, 1) for x in t["alone"]],
                                      "two_side_by_side_s": [round(x, 1) for x in t["pair"]],
                                      "ratio_of_medians": round(pair / alone, 2)}
        print(f"{policy}: median alone {alone:.1f} s, side by side {pair:.1f} s, {pair / alone:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
