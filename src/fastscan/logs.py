"""Logging set-up for workflow jobs: everything a job prints ends up in its rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def rule_logging(path: str | os.PathLike, *, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send ``logging``, stdout and stderr to ``path`` for the duration of a job.

    fastai and tqdm write progress to stdout/stderr; in a non-interactive job that belongs in the
    rule's log, not in the terminal of the Snakemake run. An exception is logged with its
    traceback before it propagates, so the log says why the job failed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(True)
        log = logging.getLogger("fastscan.job")
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                yield log
        except BaseException:
            log.exception("job failed")
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            logging.captureWarnings(False)


def console_logging(level: int = logging.INFO) -> None:
    """Plain logging to stderr for the command-line interface."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
