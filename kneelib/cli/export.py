"""``kneelib export``: one run or an ensemble as an ONNX or TorchScript model plus a JSON sidecar."""

from __future__ import annotations

import argparse
from pathlib import Path

#: ``--out`` suffixes that choose TorchScript when ``--format`` is not given (else ONNX).
TORCHSCRIPT_SUFFIXES = {".pt", ".ts", ".torchscript"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="export run(s) as one ONNX or TorchScript model with a JSON sidecar",
        description="Write one model file for RUN_DIR (or the ensemble of several RUN_DIRs, which "
        "must share scheme, image size and CLAHE): input N x 3 x S x S float32 preprocessed like "
        "kneelib predict, output N x C logits (the members' mean; softmax gives the ensemble's "
        "probabilities), dynamic batch axis. FILE.json beside it records classes, preprocessing, "
        "members and the file's sha256. The model is checked against PyTorch before it is kept.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories")
    parser.add_argument("--format", dest="fmt", choices=("onnx", "torchscript"),
                        help="model format (default: torchscript for --out *.pt/*.ts, else onnx)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="model file to write (e.g. kl.onnx); the sidecar is FILE.json")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    from kneelib.cli.evaluate import warn_unfinished
    from kneelib.errors import KneelibError
    from kneelib.serve.export import OPSET, export_runs, sidecar_path

    from kneelib.atomic import check_output_file

    check_output_file(args.out)
    check_output_file(sidecar_path(args.out))
    fmt = args.fmt or ("torchscript" if args.out.suffix.lower() in TORCHSCRIPT_SUFFIXES else "onnx")
    if args.opset is not None and fmt != "onnx":
        raise KneelibError("--opset applies to --format onnx only")
    meta = export_runs(args.run_dirs, fmt=fmt, out=args.out, opset=OPSET if args.opset is None else args.opset)
    warn_unfinished((Path(d).name, d) for d in args.run_dirs)
    members = ", ".join(f"{m['name']} ({m['arch']})" for m in meta["members"])
    kind = f"onnx, opset {meta['opset']}" if fmt == "onnx" else "torchscript"
    print(f"model:   {args.out} ({kind}; {len(meta['members'])} run(s): {members})")
    print(f"input:   N x 3 x {meta['image_size']} x {meta['image_size']} float32, CLAHE "
          f"{'on' if meta['clahe'] else 'off'}; output: N x {len(meta['classes'])} logits "
          f"({', '.join(meta['classes'])})")
    print(f"sidecar: {sidecar_path(args.out)}")
    print(f"sha256:  {meta['sha256']}")
    return 0
