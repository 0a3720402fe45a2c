"""Logging set-up for workflow jobs: everything a job prints ends up in its rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

#: Warnings that third-party code emits on every run and that say nothing about the user's data
#: or settings: torch deprecations inside fastai (and torch's own TorchScript loader), and
#: fastai's GAN callbacks setting learner attributes, which its ``GANTrainer`` does by design.
#: A job's log leaves them out, so that the warnings it keeps are worth reading.
QUIET_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`torch\.jit\.(script|load|save)` is deprecated"),
    (FutureWarning, r"`torch\.nn\.utils\.weight_norm` is deprecated"),
    (UserWarning, r"You are shadowing an attribute \((generator|critic|gen_mode)\) that exists in the learner"),
)


@contextlib.contextmanager
def rule_logging(path: str | os.PathLike, *, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send ``logging``, stdout and stderr to ``path`` for the duration of a job.

    fastai and tqdm write progress to stdout/stderr; in a non-interactive job that belongs in the
    rule's log, not in the terminal of the Snakemake run. An exception is logged with its
    traceback before it propagates, so the log says why the job failed. Warnings go to the log
    too, except the third-party noise of :data:`QUIET_WARNINGS`.
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
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh), warnings.catch_warnings():
                for category, message in QUIET_WARNINGS:
                    warnings.filterwarnings("ignore", message=message, category=category)
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
