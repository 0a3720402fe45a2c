"""Command-line interface: ``fastscan restore INPUT --model DIR --out OUT.ome.zarr``."""

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
    r = sub.add_parser("restore", help="restore a slide or image with a trained model into OME-Zarr")
    r.add_argument("input", help="TIFF/OME-TIFF/SVS/OIB/OIF or Zarr image")
    r.add_argument("--model", required=True, help="model directory (generator.pth + model.json)")
    r.add_argument("--out", required=True, help="output .ome.zarr path")
    r.add_argument("--channel", type=int, default=0, help="channel to restore (default 0)")
    r.add_argument("--level", type=int, default=0, help="pyramid level of the input (default 0)")
    r.add_argument("--tile", type=int, default=128, help="LR tile size (default 128)")
    r.add_argument("--overlap", type=int, default=32, help="tile overlap in LR px (default 32)")
    r.add_argument("--batch-size", type=int, default=4)
    r.add_argument("--region", type=int, default=512, help="LR region processed at once (bounds memory)")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    r.add_argument("--threads", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fastscan.logs import console_logging

    console_logging()
    if args.command == "restore":
        from fastscan.infer import restore_slide
        from fastscan.io import InputError
        from fastscan.models import ModelError
        from fastscan.train import resolve_device

        try:
            restore_slide(
                args.input,
                args.out,
                model_dir=args.model,
                channel=args.channel,
                level=args.level,
                tile=args.tile,
                overlap=args.overlap,
                batch_size=args.batch_size,
                region=args.region,
                device=resolve_device(args.device),
                threads=args.threads,
            )
        except (InputError, ModelError) as exc:
            log.error("%s", exc)
            return 2
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
