"""Command-line interface: ``fastscan restore INPUT --model DIR --out OUT.ome.zarr [--series]``,
``fastscan sheet FOLDER... --out samples.tsv``, ``fastscan export MODEL_DIR --out NAME.bioimageio.zip``,
``fastscan info MODEL_DIR``."""

from __future__ import annotations

import argparse
import logging
import sys

from fastscan import __version__

log = logging.getLogger("fastscan")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastscan", description=__doc__)
    p.add_argument("--version", action="version", version=f"fastscan {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_restore(sub)
    _add_sheet(sub)
    _add_export(sub)
    _add_info(sub)
    return p


def _add_restore(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "restore",
        help="restore a slide (or, with --series, a video-rate series) with a trained model into OME-Zarr",
        description="Restore a whole slide region by region, or a (T, Y, X) series frame batch by frame batch, into "
        "an OME-Zarr multiscale image at the model's scale. A killed run continues where it stopped when run again "
        "with the same arguments; the output appears only once complete.",
    )
    r.add_argument("input", help="TIFF/OME-TIFF/SVS/OIB/OIF or Zarr/OME-Zarr image (with --series: a series or a glob of frames)")
    r.add_argument("--model", required=True, help="model directory (generator.pth + model.json)")
    r.add_argument("--out", required=True, help="output .ome.zarr path (never an existing folder or file that fastscan did not write)")
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a fastscan store of another restoration at --out (a re-run of the same restoration replaces its own output without it)",
    )
    r.add_argument("--wait", action="store_true", help="if another restoration is writing --out, wait for it to finish instead of failing")
    r.add_argument("--series", action="store_true", help="the input is a video-rate (T, Y, X) series; the output keeps T")
    r.add_argument("--channel", default="0", help="channel index, a list such as 0,2, or 'all' (slides; default 0)")
    # The defaults of the options named like a restore.* config key are that key's default in
    # workflow/schemas/config.schema.yaml (tests/test_restore_cli.py compares them): the schema is
    # not installed with the package, so they are restated here rather than read.
    r.add_argument("--level", type=int, default=0, help="pyramid level of the input slide (default %(default)s)")
    r.add_argument("--tile", type=int, default=None, help="largest LR tile (default: from the model's training crops or receptive field)")
    r.add_argument("--overlap", type=int, default=None, help="tile overlap in LR px (default: from the training crops or receptive field)")
    r.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default: chosen for the device)")
    r.add_argument("--region", type=int, default=512, help="LR region processed at once; bounds memory (default %(default)s)")
    r.add_argument("--frames-per-chunk", type=int, default=8, help="series frames restored and written together (default %(default)s)")
    r.add_argument("--pyramid-levels", type=int, default=3, help="resolution levels of the output (default %(default)s)")
    r.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bf16 on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16), else float32",
    )
    r.add_argument(
        "--compile",
        default="off",
        choices=["off", "auto"],
        help="auto: torch.compile the generator on CUDA, falling back to eager if it fails (default %(default)s)",
    )
    r.add_argument(
        "--ensemble",
        default="none",
        choices=["none", "flips"],
        help="flips: average each tile's restoration as it is and flipped three ways, 4x the compute (default %(default)s)",
    )
    r.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    r.add_argument("--threads", type=int, default=None, help="CPU threads of torch")


def _add_sheet(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "sheet",
        help="pair a session's OIB/OIF/TIFF/NPY/PNG files into a sample sheet, with a review of what was paired and why",
        description="Read the header of every OIB/OIF/TIFF/NPY/PNG under the folders (never the pixels; a folder of PNG "
        "frames is one series), pair each video-rate "
        "series with the HR target of the same field of view (size ratio --scale, same field in micrometres, zoom, "
        "stage and focus position, time), propose a split per FOV and write samples.tsv. A review table of what was "
        "paired, what was not and why is printed; check it before running the workflow.",
    )
    s.add_argument("folders", nargs="+", metavar="FOLDER", help="folder(s) holding a session's files (searched recursively)")
    s.add_argument("--out", required=True, help="sample sheet to write (refused if it exists, unless --force)")
    s.add_argument("--review", default=None, help="also write the review table as TSV here")
    s.add_argument("--force", action="store_true", help="replace an existing --out (and --review) file")
    s.add_argument("--scale", type=int, default=2, help="HR pixels per LR pixel per axis, as ingest.scale (default 2; 1 for denoising pairs)")
    s.add_argument("--sample", default=None, help="sample name of every row (default: the name of each FOLDER)")
    s.add_argument(
        "--lr-pixel-size",
        type=float,
        default=None,
        metavar="UM",
        help="LR pixel size in µm, written for pairs of which neither file records one (NPY arrays, plain TIFFs); HR: UM / --scale",
    )
    s.add_argument(
        "--relative-to", default=None, metavar="DIR", help="write paths relative to DIR, e.g. . for the folder Snakemake runs in (default: absolute paths)"
    )
    s.add_argument("--no-split", action="store_true", help="leave the split column empty (the workflow then splits by hash)")
    s.add_argument("--seed", type=int, default=0, help="seed of the split order, as the config's seed (default 0)")
    s.add_argument("--val-fraction", type=float, default=0.15, help="as split.val_fraction (default 0.15)")
    s.add_argument("--test-fraction", type=float, default=0.15, help="as split.test_fraction (default 0.15)")
    s.add_argument(
        "--test",
        action="append",
        default=[],
        metavar="PATTERN",
        help="hold out as test the FOVs whose LR or HR path below FOLDER matches this glob (repeatable; * also crosses /), "
        "e.g. a public dataset's own test FOVs: 'raw/19/*'; the other FOVs are split into train and val",
    )
    s.add_argument("--position-tolerance", type=float, default=0.1, help="largest stage distance of a pair, as a fraction of the field width (default 0.1)")
    s.add_argument("--focus-tolerance", type=float, default=2.0, help="largest focus difference of a pair in µm (default 2)")
    s.add_argument("--session-gap", type=float, default=12.0, help="hours beyond which two files are of different sessions (default 12)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export",
        help="write a model as a bioimage.io package (Fiji/deepImageJ, napari, ilastik)",
        description="Write a trained model as a bioimage.io model package (spec 0.5): PyTorch state dict with a "
        "torch-only architecture, TorchScript and ONNX weights, the model's own normalisation, test tensors, cover "
        "and README, validated with bioimageio.spec and tested with bioimageio.core. Runs without network access.",
    )
    e.add_argument("model", help="model directory (generator.pth + model.json)")
    e.add_argument("--out", required=True, help="package to write, NAME.bioimageio.zip")
    e.add_argument("--name", default=None, help="package name (default: the model directory's name)")
    e.add_argument("--author", action="append", default=None, help="author name (repeat for several; default: fastscan contributors)")
    e.add_argument("--license", default=None, help="SPDX licence of the weights (default BSD-3-Clause)")
    e.add_argument("--sample", default=None, help="raw LR image (.npy or TIFF) to cut the test tile from (default: the model's dataset)")
    e.add_argument(
        "--metrics", default=None, help="per-image metrics table for the README (default: MODEL/metrics.tsv, else the workflow's results/report/metrics.tsv)"
    )
    e.add_argument("--no-onnx", action="store_true", help="leave out the ONNX weights")
    e.add_argument("--no-test", action="store_true", help="skip bioimageio.core's model test of the written package")


def _add_info(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser(
        "info",
        help="show a model's training data, normalisation, geometry, metrics and the fastscan version that made it",
    )
    i.add_argument("model", help="model directory (generator.pth + model.json)")
    i.add_argument("--metrics", default=None, help="per-image metrics table (default: MODEL/metrics.tsv, else the workflow's results/report/metrics.tsv)")


def _export(args: argparse.Namespace) -> int:
    from fastscan.atomic import OutputError
    from fastscan.export import ExportError, export_model
    from fastscan.models import ModelError

    try:
        summary = export_model(
            args.model,
            args.out,
            name=args.name,
            authors=[{"name": a} for a in args.author] if args.author else None,
            license=args.license,
            sample=args.sample,
            metrics=args.metrics,
            onnx=not args.no_onnx,
            test=not args.no_test,
        )
    except (ExportError, ModelError, OutputError, OSError) as exc:
        log.error("%s", exc)
        return 2
    log.info("weights: %s; test: %s", ", ".join(summary["formats"]), summary["test"] or "not run")
    return 0


def _info(args: argparse.Namespace) -> int:
    from fastscan.export import model_info
    from fastscan.models import ModelError

    try:
        print(model_info(args.model, metrics=args.metrics))
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    return 0


def _sheet(args: argparse.Namespace) -> int:
    from fastscan.atomic import OutputError
    from fastscan.io import InputError
    from fastscan.pairing import check_outputs, propose, review_text, write_sheet

    try:
        check_outputs(args.out, args.review, force=args.force)
        proposal = propose(
            args.folders,
            scale=args.scale,
            sample=args.sample,
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            split=not args.no_split,
            position_tolerance=args.position_tolerance,
            focus_tolerance_um=args.focus_tolerance,
            session_gap_h=args.session_gap,
            lr_pixel_size_um=args.lr_pixel_size,
            test=args.test,
        )
        sys.stdout.write(review_text(proposal))
        sys.stdout.flush()
        write_sheet(proposal, args.out, review=args.review, relative_to=args.relative_to, force=args.force)
    except (InputError, OutputError, OSError) as exc:
        log.error("%s", exc)
        return 2
    log.info("wrote %s: review the pairs and splits above before running the workflow", args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fastscan.logs import console_logging

    console_logging()
    if args.command == "sheet":
        return _sheet(args)
    if args.command == "export":
        return _export(args)
    if args.command == "info":
        return _info(args)
    if args.command == "restore":
        from fastscan.atomic import OutputError
        from fastscan.io import InputError
        from fastscan.lock import LockedError
        from fastscan.models import ModelError
        from fastscan.restore import RestoreError
        from fastscan.restore.series import restore_series
        from fastscan.restore.slide import parse_channels, restore_slide
        from fastscan.train import resolve_device

        common = dict(
            model_dir=args.model,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            pyramid_levels=args.pyramid_levels,
            precision=args.precision,
            compile=args.compile,
            ensemble=args.ensemble,
            threads=args.threads,
            overwrite=args.overwrite,
            wait=args.wait,
        )
        try:
            device = resolve_device(args.device)
            channel = parse_channels(args.channel)
            if args.series:
                if not isinstance(channel, int):
                    raise InputError(f"{args.input}: --series restores one channel; got --channel {args.channel!r}")
                restore_series(args.input, args.out, channel=channel, frames_per_chunk=args.frames_per_chunk, device=device, **common)
            else:
                restore_slide(args.input, args.out, channel=channel, level=args.level, region=args.region, device=device, **common)
        except (InputError, ModelError, RestoreError, OutputError, LockedError, ValueError, RuntimeError) as exc:
            log.error("%s", exc)
            return 2
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
