"""``kneelib predict``: grade knee crops, or both knees of full bilateral radiographs, with trained
runs or an exported model; optionally write Grad-CAM overlays."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from kneelib.radiograph.bilateral import BilateralResult
    from kneelib.radiograph.localizer import Localizer
    from kneelib.serve.predict import Grader, Predictor

from kneelib.atomic import check_output_dir
from kneelib.errors import KneelibError

#: File suffixes that mark the start of the image list in ``predict --runs RUN... IMAGE...``.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    pr = subparsers.add_parser(
        "predict",
        help="grade knee crops or bilateral radiographs with runs or an exported model",
        description="Print the predicted grade and every class probability for each knee-crop IMAGE, "
        "using the preprocessing the runs recorded (several runs are combined like in evaluate), or "
        "with an exported model (--model, see `kneelib export`). --bilateral takes full PA "
        "radiographs (PNG/JPEG/DICOM): both knees are located, cropped, graded, and an annotated "
        "overview is written to --out.",
    )
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="training run directories")
    src.add_argument("--model", type=Path, metavar="FILE", help="an exported .onnx/.pt model (with FILE.json)")
    pr.add_argument("images", nargs="*", metavar="IMAGE", help="knee crop images (PNG/JPEG/DICOM)")
    pr.add_argument("--bilateral", nargs="+", default=[], metavar="IMAGE",
                    help="full bilateral PA radiographs (PNG/JPEG/DICOM): grade both knees")
    pr.add_argument("--localizer", type=Path, metavar="FILE",
                    help="knee localiser (default: the one `kneelib localize train` wrote to the cache)")
    pr.add_argument("--out", type=Path, default=Path("predictions"), metavar="DIR",
                    help="where --bilateral writes overviews and crops (default ./predictions)")
    pr.add_argument("--heatmaps", type=Path, metavar="DIR", help="write Grad-CAM overlays here (needs --runs)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    pr.set_defaults(func=run_predict)


def split_runs_and_images(runs: list[str], images: list[str]) -> tuple[list[str], list[str]]:
    """Allow ``--runs R1 R2 IMG1 IMG2``: the run list ends at the first image-like path."""
    if images:
        return runs, images
    for i, item in enumerate(runs):
        path = Path(item)
        if path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
            return runs[:i], runs[i:]
    return runs, []


def run_predict(args: argparse.Namespace) -> int:
    from kneelib.serve.predict import (
        check_images,
        format_predictions,
        grade_images,
        load_grader,
        output_stems,
    )

    runs, images = (split_runs_and_images(list(args.runs), list(args.images)) if args.runs
                    else (None, list(args.images)))
    if args.runs is not None and not runs:
        raise KneelibError("no run directories given (--runs RUN_DIR [RUN_DIR ...] IMAGE [IMAGE ...])")
    if args.heatmaps and args.model:
        raise KneelibError("--heatmaps needs --runs (Grad-CAM needs the PyTorch model, not an export)")
    if args.heatmaps:
        check_output_dir(args.heatmaps)
    if args.bilateral:
        check_output_dir(args.out)
    crops = check_images(images) if images else []
    radiographs = check_images(args.bilateral) if args.bilateral else []
    if not crops and not radiographs:
        raise KneelibError("no images given (IMAGE ... or --bilateral IMAGE ...)")
    localizer = None
    if radiographs:
        from kneelib.radiograph.localizer import load_localizer

        localizer = load_localizer(args.localizer)
    grader = load_grader(runs=runs, model=args.model, device=args.device)
    log = sys.stderr if args.json else sys.stdout
    output: list[dict[str, Any]] = grade_images(grader, crops) if crops else []
    graded = [_grade_radiograph(path, grader, localizer, bool(args.heatmaps)) for path in radiographs]
    stems = output_stems([*crops, *radiographs])  # every input read and graded: now write, one name each
    if crops:
        if not args.json:
            print(format_predictions(output, grader.class_names))
        if args.heatmaps:
            _write_crop_heatmaps(grader, crops, stems, args.heatmaps, log)
    for result, stem in zip(graded, stems[len(crops):]):
        output.append(_write_radiograph(result, stem, grader, args, log))
    if args.json:
        # crops: a list, as always; a single bilateral radiograph: its object
        single = not crops and len(radiographs) == 1
        print(json.dumps(output[0] if single else output, indent=2))
    return 0


def _write_crop_heatmaps(grader: Predictor, crops: list[Path], stems: list[str], out: Path, log: TextIO) -> None:
    from kneelib.data.io import read_image
    from kneelib.serve.explain import overlay, write_overlays

    for path, stem in zip(crops, stems):
        image = read_image(path)
        cam, _ = grader.heatmap(image)
        (written,) = write_overlays(out, [(f"{stem}_gradcam", overlay(image, cam))])
        print(f"heat map: {written}", file=log)


def _grade_radiograph(path: Path, grader: Grader, localizer: Localizer, heatmaps: bool) -> BilateralResult:
    from kneelib.radiograph.bilateral import grade_bilateral

    return grade_bilateral(path, grader, localizer, heatmaps=heatmaps)


def _write_radiograph(result: BilateralResult, stem: str, grader: Grader, args: argparse.Namespace,
                      log: TextIO) -> dict[str, Any]:
    """Write a graded radiograph's overview, crops (and heat maps) under ``stem``; print and return its record."""
    from kneelib.radiograph.bilateral import write_outputs
    from kneelib.serve.predict import format_predictions

    written = write_outputs(result, args.out, stem)
    if args.heatmaps:
        from kneelib.serve.explain import overlay, write_overlays

        for knee in result.knees:
            write_overlays(args.heatmaps, [(f"{stem}_{knee.side}_gradcam", overlay(knee.crop, knee.heatmap))])
    doc = {**result.as_json(), "overview": str(written["overview"])}
    if not args.json:
        spacing = f"{result.spacing_mm:.3f} mm/px" if result.spacing_mm else "no pixel spacing"
        print(f"{result.image} ({result.radiograph.shape[1]}x{result.radiograph.shape[0]}, {spacing})")
        rows = [{"image": f"  {k.side} knee {k.box.as_list()}", "grade": k.grade,
                 "probabilities": k.probabilities} for k in result.knees]
        print(format_predictions(rows, grader.class_names))
    print(f"overview: {written['overview']}", file=log)
    return doc
