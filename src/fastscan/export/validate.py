"""The package test: the written package reloaded and validated by ``bioimageio.spec``, and,
when asked, ``bioimageio.core``'s model test (every weight format reproduces the test output)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastscan.export.model import ExportError


def _validate_package(package: Path, formats: Sequence[str] | None) -> str | None:
    """Reload the written package (static validation) and, with ``formats``, run bioimageio.core's model test."""
    from bioimageio.spec import InvalidDescr, load_model_description

    descr = load_model_description(package, perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        raise ExportError(
            f"{package}: the written package does not validate:\n{descr.validation_summary.display_str() if hasattr(descr.validation_summary, 'display_str') else descr.validation_summary}"
        )
    if formats is None:
        return None
    try:
        from bioimageio.core import test_model
    except ImportError as exc:
        raise ExportError(f"testing the package needs bioimageio.core ({exc}): pip install 'fastscan[export]', or export without the test") from exc
    summary = test_model(package, devices=["cpu"])
    if summary.status != "passed":
        failed = [f"{d.name}: {e.msg}" for d in summary.details if d.status == "failed" for e in d.errors] or [
            d.name for d in summary.details if d.status == "failed"
        ]
        raise ExportError(f"bioimageio.core's model test failed on the package: {'; '.join(failed)[:2000]}")
    return str(summary.status)
