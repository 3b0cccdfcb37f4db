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
            "--out", str(out), "--quiet"]


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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"conditions": {"command": " ".join(train_command(Path("RUN"), args)[1:]), "cpus": os.cpu_count()},
              "policies": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for policy in args.policies:
            alone = timed(1, policy, args, Path(scratch))
            pair = timed(2, policy, args, Path(scratch))
            report["policies"][policy] = {"alone_s": round(alone, 1), "two_side_by_side_s": round(pair, 1),
                                          "ratio": round(pair / alone, 2)}
            print(f"OMP_WAIT_POLICY={policy}: alone {alone:.1f} s, two side by side {pair:.1f} s "
                  f"({pair / alone:.2f}x)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
