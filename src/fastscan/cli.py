"""Command-line interface: ``fastscan restore INPUT --model DIR --out OUT.ome.zarr [--series]``."""

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
    r.add_argument("--overwrite", action="store_true", help="replace a fastscan store of another restoration at --out (a re-run of the same restoration replaces its own output without it)")
    r.add_argument("--wait", action="store_true", help="if another restoration is writing --out, wait for it to finish instead of failing")
    r.add_argument("--series", action="store_true", help="the input is a video-rate (T, Y, X) series; the output keeps T")
    r.add_argument("--channel", default="0", help="channel index, a list such as 0,2, or 'all' (slides; default 0)")
    r.add_argument("--level", type=int, default=0, help="pyramid level of the input slide (default 0)")
    r.add_argument("--tile", type=int, default=None, help="largest LR tile (default: from the model's receptive field)")
    r.add_argument("--overlap", type=int, default=None, help="tile overlap in LR px (default: from the receptive field)")
    r.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default: chosen for the device)")
    r.add_argument("--region", type=int, default=512, help="LR region processed at once; bounds memory (default 512)")
    r.add_argument("--frames-per-chunk", type=int, default=8, help="series frames restored and written together (default 8)")
    r.add_argument("--pyramid-levels", type=int, default=3, help="resolution levels of the output (default 3)")
    r.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="auto: bf16 on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16), else float32")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    r.add_argument("--threads", type=int, default=None, help="CPU threads of torch")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fastscan.logs import console_logging

    console_logging()
    if args.command == "restore":
        from fastscan.atomic import OutputError
        from fastscan.infer import RestoreError, parse_channels, restore_series, restore_slide
        from fastscan.io import InputError
        from fastscan.lock import LockedError
        from fastscan.models import ModelError
        from fastscan.train import resolve_device

        common = dict(
            model_dir=args.model,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            pyramid_levels=args.pyramid_levels,
            precision=args.precision,
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
