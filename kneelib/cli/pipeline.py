"""``kneelib reproduce``: run the notebook sweep of a profile with papermill."""

from __future__ import annotations

import argparse

from kneelib.errors import KneelibError
from kneelib.pipeline import (
    PROFILES,
    Profile,
    get_profile,
    reproduce,
    update_committed_notebooks,
)
from kneelib.pipeline.reference import write_reference


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` sub-command."""
    p = sub.add_parser(
        "reproduce", help="regenerate every table and figure by executing the notebooks (papermill)",
        description="Execute notebooks/ in order for a profile; writes OUT/{notebooks,tables,figures}. "
        "Finished runs are skipped and killed runs resumed.",
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="smoke",
                   help="smoke: synthetic data, tiny and fast (default); paper: the paper's settings")
    p.add_argument("--data", help="data directory ({train,val,test}/{0..4}); default: synthetic for smoke")
    p.add_argument("--out", help="output directory (default runs/<profile>)")
    p.add_argument("--archs", nargs="+", help="architectures (default: all eight)")
    p.add_argument("--schemes", nargs="+", choices=["kl5", "kl4"], help="label schemes (default both)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default 21 42 84)")
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--image-size", type=int, help="override the profile's image size")
    p.add_argument("--split", help="split the tables are computed on (default test; real data here: val)")
    p.add_argument("--jobs", type=int, help="training notebooks (one model, all seeds) run at once (smoke: 3; paper, scratch: sized from free GPU memory, else 1)")
    p.add_argument("--hours", type=float, metavar="H",
                   help="cpu profile: choose the image size and epochs so that the grid trains in about H hours "
                   "on this machine (from timed steps and the measured learning curves); printed before training")
    p.add_argument("--dry-run", action="store_true", help="with --hours: print the choice and its projected time, "
                   "train nothing")
    p.add_argument("--executor", default="local", metavar="local|ray",
                   help="where the training notebooks run: local worker processes (default) or Ray tasks "
                   "(pip install -e '.[ray]')")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="with --executor ray: join this cluster's head (default: start a local Ray instance)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--real-data", help="real kneeKL224 folder for the synthetic-vs-real montage "
                   "(default ../shared/data/kneeKL224 when present)")
    p.add_argument("--update-notebooks", action="store_true",
                   help="copy the executed notebooks over notebooks/ (the nbval reference outputs) and record the "
                   "trained numbers as notebooks/reference/<profile>.json")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile, archs=args.archs, schemes=args.schemes, seeds=args.seeds,
                          epochs=args.epochs, image_size=args.image_size, split=args.split,
                          jobs=args.jobs)
    if args.hours is not None or args.dry_run:
        profile = _budgeted(profile, args)
        if args.dry_run:
            return 0
    layout = reproduce(profile, data=args.data, out=args.out, device=args.device, real_data=args.real_data,
                       executor=args.executor, ray_address=args.ray_address)
    if args.update_notebooks:
        featured = (profile.featured_arch, profile.featured_scheme)
        for path in update_committed_notebooks(layout, featured=featured):
            print(f"updated {path}")
        print(f"updated {write_reference(layout, profile.name)}")
    return 0


def _budgeted(profile: Profile, args: argparse.Namespace) -> Profile:
    """``profile`` with the size and epochs of ``--hours`` (printed); KneelibError where it does not apply."""
    from kneelib.pipeline.budget import BUDGET_FILE, plan, record_budget, recorded_budget, with_budget
    from kneelib.pipeline.reproduce import output_dir

    if args.hours is None:
        raise KneelibError("--dry-run goes with --hours")
    if profile.name != "cpu":
        raise KneelibError(f"--hours chooses the cpu profile's sizes, not the {profile.name} profile's")
    if args.epochs is not None or args.image_size is not None:
        raise KneelibError("--hours chooses the epochs and image size: leave out --epochs and --image-size")
    if not args.data:
        raise KneelibError("--hours needs --data (the real crops it will train on)")
    out = output_dir(profile, args.out)
    budget = recorded_budget(out, profile, args.hours, device=args.device)
    if budget is not None:  # a rerun resumes with what was chosen then, not what the machine's load says now
        chosen, source = with_budget(profile, budget), f" (chosen before: {out / BUDGET_FILE})"
    else:
        chosen, budget = plan(profile, args.data, args.hours, device=args.device)
        source = "" if args.dry_run else f" (recorded: {record_budget(out, profile, budget, device=args.device)})"
    changes = ", ".join(f"{k} {v}" for k, v in chosen.recipe_changes)
    print(f"{budget.describe()}; the scratch recipe{' with ' + changes if changes else ''}{source}", flush=True)
    return chosen
