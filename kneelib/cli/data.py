"""Data sub-commands: ``filter``, ``split``, ``stats``, ``synth`` and ``data verify|prepare`` (thin wrappers
over kneelib.data)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from kneelib.atomic import check_output_dir, check_output_file
from kneelib.errors import KneelibError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data sub-commands to the ``kneelib`` parser."""
    from kneelib.data.quality import BLUR_FRACTION, DEFAULT_REPORT
    from kneelib.data.schemes import SCHEME_NAMES
    from kneelib.data.split import PROTOCOLS

    p = sub.add_parser("filter", help="flag corrupt, tiny, blank, colour and blurred images (nothing is deleted)",
                       description="Check every image under DIR (or listed in a manifest) and write a CSV report "
                       "(file, reason, score, detail) plus a JSON sidecar with the blur threshold. The report "
                       f"defaults to ./{DEFAULT_REPORT} in the current directory, never beside the data.")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--report", type=Path, default=Path(DEFAULT_REPORT), help=f"CSV report (default ./{DEFAULT_REPORT})")
    p.add_argument("--blur-fraction", type=float, default=BLUR_FRACTION, metavar="F",
                   help=f"blurred = Laplacian variance below F x the folder's median (default {BLUR_FRACTION:.4g})")
    p.add_argument("--blur-threshold", type=float, default=None,
                   help="fixed Laplacian-variance threshold instead of calibrating on DIR")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser("split", help="patient-grouped stratified train/val/test split (links + manifest.csv)",
                       description="Split SRC (a pool DIR/{0..4}, a split folder — pooled first — or a manifest) "
                       "into OUT/{split}/{grade}/ (symlinks; hardlinks or copies where links fail) with manifest.csv.")
    p.add_argument("src", type=Path, metavar="SRC")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--ratios", default=None, help="train:val:test (default 7:1:2; grouped protocol only)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42, as the paper)")
    p.add_argument("--exclude", type=Path, default=None, metavar="REPORT",
                   help="skip the files flagged in a `kneelib filter` report")
    p.add_argument("--protocol", choices=PROTOCOLS, default="grouped",
                   help="grouped: by patient, stratified (default); paper: pool train+val, stratified 12.5%% "
                   "val, not grouped, test kept")
    p.add_argument("--link", choices=("symlink", "hardlink", "copy"), default="symlink",
                   help="how files enter OUT (default symlink, falling back to hardlink, then copy)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("stats", help="images per split and class (the paper's Table 1)")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--scheme", choices=SCHEME_NAMES, default="kl5")
    p.add_argument("--json", action="store_true", help='print {"split": {"class": n}} as JSON')
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("synth", help="generate a synthetic knee data set (no real data needed)")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--per-grade", type=int, default=20)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bilateral", type=int, default=0, help="also write N bilateral radiographs")
    p.add_argument("--signs", type=float, default=1.0,
                   help="KL sign strength: 1 realistic (default), >1 exaggerated (the smoke profile uses 3)")
    p.set_defaults(func=cmd_synth)
    register_paper_data(sub)


def register_paper_data(sub: argparse._SubParsersAction) -> None:
    """``kneelib data verify DIR`` and ``kneelib data prepare SRC OUT``."""
    from kneelib.data.paper.prepare import CLAHE_MODES, LINK_MODES

    p = sub.add_parser("data", help="the paper's data set: verify a copy against its manifest, prepare a variant",
                       description="Compare a copy of the paper's data set (Chen 2018, doi:10.17632/56rmx5bjcr.1) "
                       "with the manifest of its 8,260 crops shipped in kneelib, or turn a variant into its layout.")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    manifest_help = ("compare with this manifest (CSV or .csv.gz: split, grade, file, bytes, sha256) instead of "
                     "the paper's")
    v = actions.add_parser("verify", help="compare DIR with the paper's data set, file by file (exit 0 only if exact)",
                           description="Report, per split and grade, the files of DIR that match the paper's, are "
                           "missing, extra, relabelled (another split or grade) or changed (same name, other bytes), "
                           "which variant DIR is (kneeKL299, other preprocessing, a pool, extra folders) and what to "
                           "do. Writes nothing. Exit status: 0 exact copy, 1 any difference, 2 bad input.")
    v.add_argument("dir", type=Path, metavar="DIR", help="split folders, a pool of grade folders, or a manifest CSV")
    v.add_argument("--json", action="store_true", help="print the report as JSON (every file named)")
    v.add_argument("--manifest", type=Path, default=None, metavar="CSV", help=manifest_help)
    v.set_defaults(func=cmd_data_verify)

    v = actions.add_parser("prepare", help="write the paper's layout (224 px, its split) from a variant in SRC",
                           description="Write OUT/{train,val,test}/{0..4}/ at 224 px with the manifest's split and "
                           "grade from any variant in SRC (kneeKL299, a pool, another layout): identical files are "
                           "linked, others resized (area) and, where needed, given the paper's CLAHE. Nothing is "
                           "written into SRC; OUT appears only complete; a re-run finds it done.")
    v.add_argument("src", type=Path, metavar="SRC")
    v.add_argument("out", type=Path, metavar="OUT")
    v.add_argument("--clahe", choices=CLAHE_MODES, default="auto",
                   help="apply the paper's CLAHE to converted files: auto (when the copy lacks it; default), on, off")
    v.add_argument("--link", choices=LINK_MODES, default="hardlink",
                   help="how identical files enter OUT (default hardlink, falling back to a copy)")
    v.add_argument("--force", action="store_true", help="rebuild OUT if it exists")
    v.add_argument("--manifest", type=Path, default=None, metavar="CSV", help=manifest_help)
    v.set_defaults(func=cmd_data_prepare)


def cmd_filter(args: argparse.Namespace) -> int:
    """``kneelib filter DIR [--report FILE]``."""
    from kneelib.data.quality import filter_images, write_report

    check_output_file(args.report)
    result = filter_images(args.dir, fraction=args.blur_fraction, threshold=args.blur_threshold)
    report, side = write_report(result, args.report)
    blur = result.threshold
    print(f"checked {len(result.checks)} images under {args.dir} in {result.seconds:.1f} s")
    if blur.value is None:
        print(f"blur check: {blur.method}")
    else:
        print(f"blur threshold: Laplacian variance < {blur.value:.1f} ({blur.method})")
    flagged = {r: n for r, n in sorted(result.counts.items()) if r != "ok"}
    print("flagged: " + (", ".join(f"{r} {n}" for r, n in flagged.items()) if flagged else "none")
          + f"; ok {result.counts.get('ok', 0)}")
    for c in result.flagged[:10]:
        print(f"  {c.reason:10s} {c.path}  {c.detail}")
    if len(result.flagged) > 10:
        print(f"  ... and {len(result.flagged) - 10} more (see the report)")
    print(f"report: {report} (threshold and method: {side}); nothing was deleted")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """``kneelib split SRC OUT``."""
    from kneelib.data.layout import discover, splits_present
    from kneelib.data.quality import read_report
    from kneelib.data.split import (
        DEFAULT_RATIOS,
        PAPER_VAL_FRACTION,
        check_output_location,
        exclude,
        parse_ratios,
        patients_across_splits,
        proportions,
        split_samples,
        write_split,
    )
    from kneelib.data.stats import class_counts

    if args.protocol == "paper" and args.ratios is not None:
        raise KneelibError("--ratios does not apply to --protocol paper (val is 12.5% of train+val, test kept)")
    ratios = parse_ratios(args.ratios) if args.ratios is not None else DEFAULT_RATIOS
    check_output_dir(args.out)
    start = time.perf_counter()
    samples = discover(args.src)
    check_output_location(args.out, samples, args.src)
    flagged = read_report(args.exclude) if args.exclude else set()
    source_splits = [s or "pool" for s in splits_present(samples)]
    if args.exclude:
        samples, dropped = exclude(samples, flagged)
        print(f"excluded {dropped} file(s) flagged in {args.exclude}")
        if not samples:
            raise KneelibError(f"{args.exclude}: every image of {args.src} is flagged; nothing to split")
    result = split_samples(samples, protocol=args.protocol, ratios=ratios, seed=args.seed)
    if args.protocol == "grouped":
        info = {"protocol": "grouped", "ratios": [round(r, 6) for r in ratios]}
        print(f"protocol grouped: pooled {len(samples)} images ({', '.join(source_splits)}), split by patient, "
              f"stratified by grade, ratios {':'.join(f'{r:g}' for r in ratios)}, seed {args.seed}")
    else:
        info = {"protocol": "paper", "val_fraction": PAPER_VAL_FRACTION}
        kept = "test kept as is" if "test" in source_splits else "no test split in SRC"
        print(f"protocol paper: train+val pooled, stratified {PAPER_VAL_FRACTION:g} val via train_test_split "
              f"(random_state={args.seed}), NOT grouped by patient; {kept}")
    crossing = patients_across_splits(result)
    n_patients = len({s.patient_id for s in result})
    if args.protocol == "grouped":
        print(f"no patient in more than one split: {n_patients} patients")
    else:
        print(f"patients in more than one split: {len(crossing)} of {n_patients} (paper protocol is not grouped)")
    info.update(seed=args.seed, source=os.path.abspath(args.src), n_images=len(result), n_patients=n_patients,
                patients_across_splits=len(crossing), excluded_report=str(args.exclude) if args.exclude else None)
    out, mode = write_split(result, args.out, info=info, link=args.link,
                            overwrite=args.force, source=args.src)
    print(class_counts(result).to_string())
    print("share of each split, overall and per grade (%):")
    print((proportions(result) * 100).round(1).to_string())
    files = {"symlink": "symlinks", "hardlink": "hardlinks", "copy": "copies"}[mode]
    print(f"wrote {out}/ ({files}, manifest.csv, split.json) in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """``kneelib stats DIR [--scheme] [--json]``."""
    from kneelib.data.stats import class_counts, counts_dict

    table = class_counts(args.dir, args.scheme, totals=not args.json)
    if args.json:
        print(json.dumps(counts_dict(table)))
    else:
        print(f"{args.dir} — images per split and class (scheme {args.scheme})")
        print(table.to_string())
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """``kneelib synth OUT``: delegate to kneelib.synthetic.crops.generate_dataset."""
    from kneelib.data.stats import class_counts

    try:
        from kneelib.synthetic.crops import generate_dataset
    except ImportError as exc:  # the generator lives in its own module (kneelib.synthetic.crops)
        raise KneelibError(f"synthetic data generator not available ({exc})") from None
    if args.per_grade < 1 or args.size < 64 or args.bilateral < 0:
        raise KneelibError("synth: need --per-grade >= 1, --size >= 64, --bilateral >= 0")
    check_output_dir(args.out)
    generate_dataset(args.out, per_grade=args.per_grade, size=args.size, seed=args.seed, bilateral=args.bilateral,
                     signs=args.signs)
    print(f"wrote synthetic data set to {args.out}/")
    print(class_counts(args.out).to_string())
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    """``kneelib data verify DIR [--json]``: 0 for an exact copy, 1 otherwise."""
    from kneelib.data.paper.verify import verify

    report = verify(args.dir, manifest=args.manifest)
    print(json.dumps(report.to_json(), indent=1) if args.json else report.render())
    return 0 if report.exact else 1


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """``kneelib data prepare SRC OUT``."""
    from kneelib.data.paper.prepare import PREPARE_INFO, prepare
    from kneelib.data.paper.report import verdict

    check_output_dir(args.out)
    result = prepare(args.src, args.out, manifest=args.manifest, clahe=args.clahe, link=args.link, force=args.force)
    print(f"{args.src}: {verdict(result.report)}")
    if result.already:
        print(f"{args.out}/ is already prepared from it with these options ({PREPARE_INFO}); --force rebuilds it")
        return 0
    per_split = ", ".join(f"{s} {n:,}" for s, n in result.written.items()) or "no files"
    how = "with the paper's CLAHE" if result.clahe else "without CLAHE"
    print(f"wrote {args.out}/ in {result.seconds:.1f} s: {per_split} ({result.linked:,} identical files "
          f"{'linked' if result.link != 'copy' else 'copied'}, {result.converted:,} converted to 224 px {how})")
    if result.relabelled:
        print(f"put {result.relabelled:,} relabelled file(s) back in the paper's split and grade")
    if result.skipped:
        print(f"left out: {result.skipped_summary()} (listed in {args.out}/{PREPARE_INFO})")
    if result.missing:
        print("not in the source: " + ", ".join(f"{s} {n:,}" for s, n in result.missing.items()))
    if result.converted:
        print("converted files hold other bytes than the paper's: `kneelib data verify` reports them as changed")
    return 0
