"""The registered per-FOV store: its one writer, its one reader and its typed attributes.

A registered store (``results/register/{sample}/{session}/{fov}.zarr``, written by
:func:`fastscan.register.register_fov`) is read by the dataset builder, the evaluation
restoration, the classical cascade and the benchmarks. Its layout and the keys of its
``registration`` attribute are defined here and nowhere else (docs/architecture.md, "Registered
per-FOV store"), so that a writer and its readers cannot drift apart.

The readers used to take the attributes as loose dicts with a ``0.0`` default for the scan
model: a store without ``line_phase_px`` or ``field_fraction`` was then restored *uncorrected*
and nothing failed. :func:`read_registered` instead refuses such a store with a
:class:`StoreError` that names the store and the missing key. The file format is unchanged:
:meth:`Registration.to_attrs` writes the same keys in the same order as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fastscan.atomic import atomic_path
from fastscan.jsonable import jsonable

#: Name of the registration's entry in the store's ``fastscan`` attribute.
REGISTRATION = "registration"


class StoreError(ValueError):
    """A registered per-FOV store lacks what its layout requires (the message names the store and the key)."""


def _required(registration: Mapping[str, Any], key: str, store: str | os.PathLike, what: str) -> Any:
    """``registration[key]``, or a :class:`StoreError` naming the store and the key."""
    if key not in registration:
        raise StoreError(
            f"{store}: the registered store lacks fastscan.registration.{key} ({what}); "
            "it was not written by fastscan.register.register_fov or is incomplete: register the FOV again"
        )
    return registration[key]


def _number(registration: Mapping[str, Any], key: str, store: str | os.PathLike, what: str) -> float:
    """A required number of the registration attribute, as a float."""
    value = _required(registration, key, store, what)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StoreError(f"{store}: fastscan.registration.{key} ({what}) must be a number, got {value!r}") from None


def _optional_number(registration: Mapping[str, Any], key: str) -> float | None:
    """An optional number of the registration attribute: None when absent or null."""
    value = registration.get(key)
    return None if value is None else float(value)


@dataclass(frozen=True)
class ScanModel:
    """The scan model registration fitted for one FOV (keys of ``registration``).

    Attributes
    ----------
    line_phase_px : float
        Line phase of the odd rows, LR px (positive: odd rows displaced toward +x). Required.
    field_fraction : float
        Accepted resonant field fraction; 0 for a linear scan. Required.
    resonant_field_fraction : float or None
        The best resonant candidate, accepted or not (None: not fitted).
    resonant_evidence : float or None
        Its t statistic over the linear model (None: not compared, or not fitted).
    blur_sigma_px : float or None
        Extra blur of the LR acquisition, LR px (None: not fitted).

    Notes
    -----
    Only the two corrections the readers apply are required: every reader undoes the line phase
    and the resonant warp with them, and an absent value must not be read as "no distortion".
    The three fit diagnostics are reported, never applied, and a store written by another tool
    (or a synthetic one) may lack them.
    """

    line_phase_px: float
    field_fraction: float
    resonant_field_fraction: float | None = None
    resonant_evidence: float | None = None
    blur_sigma_px: float | None = None

    @classmethod
    def from_registration(cls, registration: Mapping[str, Any], *, store: str | os.PathLike) -> ScanModel:
        """The scan model of a ``registration`` attribute read from ``store`` (named in errors)."""
        return cls(
            line_phase_px=_number(registration, "line_phase_px", store, "the fitted line phase"),
            field_fraction=_number(registration, "field_fraction", store, "the fitted resonant field fraction"),
            resonant_field_fraction=_optional_number(registration, "resonant_field_fraction"),
            resonant_evidence=_optional_number(registration, "resonant_evidence"),
            blur_sigma_px=_optional_number(registration, "blur_sigma_px"),
        )

    def to_attrs(self) -> dict[str, Any]:
        """The keys of the ``registration`` attribute, in the file's order."""
        return {
            "line_phase_px": self.line_phase_px,
            "field_fraction": self.field_fraction,
            # The scan-model fit's evidence for the best resonant field fraction over a linear scan
            # (a t statistic; null when not compared) and the extra blur of the LR acquisition (LR px).
            "resonant_field_fraction": self.resonant_field_fraction,
            "resonant_evidence": self.resonant_evidence,
            "blur_sigma_px": self.blur_sigma_px,
        }


@dataclass(frozen=True)
class RegistrationQC:
    """The registration's quality control: whether the FOV may be used, and why.

    Attributes
    ----------
    passed : bool
        ``ncc >= min_ncc``: FOVs that failed are excluded from datasets.
    ncc : float
        Normalised cross-correlation of the forward-modelled HR and the registered LR mean.
    min_ncc : float
        The threshold the FOV was held to.
    lr_per_hr, lr_at_zero_hr : float or None
        The least-squares line of the registered LR mean against the forward-modelled HR: its
        slope (LR intensity per unit of HR intensity) and its value at HR 0. None where the HR
        target is flat, and in stores registered before they were measured.
    """

    passed: bool
    ncc: float
    min_ncc: float
    lr_per_hr: float | None = None
    lr_at_zero_hr: float | None = None

    @classmethod
    def from_registration(cls, registration: Mapping[str, Any], *, store: str | os.PathLike) -> RegistrationQC:
        """The QC of a ``registration`` attribute read from ``store`` (named in errors)."""
        passed = _required(registration, "passed", store, "whether registration QC passed")
        if not isinstance(passed, bool):
            raise StoreError(f"{store}: fastscan.registration.passed must be true or false, got {passed!r}")
        return cls(
            passed=passed,
            ncc=_number(registration, "ncc", store, "the registration QC score"),
            min_ncc=_number(registration, "min_ncc", store, "the registration QC threshold"),
            lr_per_hr=_optional_number(registration, "lr_per_hr"),
            lr_at_zero_hr=_optional_number(registration, "lr_at_zero_hr"),
        )


@dataclass(frozen=True)
class Registration:
    """The ``registration`` attribute of a registered store, as :func:`write_registered` writes it.

    Attributes
    ----------
    drift_px : list of [float, float]
        Per-frame drift ``[dy, dx]``, nominal LR px (``T x 2``).
    hr_shift_px : list of float
        ``[dy, dx]`` in HR px that moved the HR target onto the LR grid.
    scan : ScanModel
        The fitted scan model.
    qc : RegistrationQC
        ``passed``, ``ncc`` and ``min_ncc``.
    residual_drift_px : float
        RMS drift re-estimated on the corrected frames, LR px.
    photons : mapping or None
        The photon calibration summary (:meth:`fastscan.photons.PhotonCalibration.summary`), or
        None when the series was not calibrated (written as null).
    """

    drift_px: list[list[float]]
    hr_shift_px: list[float]
    scan: ScanModel
    qc: RegistrationQC
    residual_drift_px: float
    photons: Mapping[str, Any] | None

    @classmethod
    def aligned(cls, frames: int, *, passed: bool = True, ncc: float = 0.9, min_ncc: float = 0.3) -> Registration:
        """The registration of a series that needed none: no drift, no HR shift, a linear scan
        without line phase, nothing fitted or calibrated (synthetic stores of tests and benchmarks)."""
        return cls(
            drift_px=[[0.0, 0.0] for _ in range(frames)],
            hr_shift_px=[0.0, 0.0],
            scan=ScanModel(line_phase_px=0.0, field_fraction=0.0),
            qc=RegistrationQC(passed=passed, ncc=ncc, min_ncc=min_ncc),
            residual_drift_px=0.0,
            photons=None,
        )

    @classmethod
    def from_attrs(cls, registration: Mapping[str, Any], *, store: str | os.PathLike) -> Registration:
        """The whole ``registration`` attribute read from ``store``; every key but the fit
        diagnostics (see :class:`ScanModel`) and ``photons`` is required."""
        photons = registration.get("photons")
        return cls(
            drift_px=[[float(v) for v in row] for row in _required(registration, "drift_px", store, "the per-frame drift")],
            hr_shift_px=[float(v) for v in _required(registration, "hr_shift_px", store, "the HR shift")],
            scan=ScanModel.from_registration(registration, store=store),
            qc=RegistrationQC.from_registration(registration, store=store),
            residual_drift_px=_number(registration, "residual_drift_px", store, "the residual drift"),
            photons=dict(photons) if isinstance(photons, Mapping) else None,
        )

    def to_attrs(self) -> dict[str, Any]:
        """The ``registration`` attribute, keys in the order of docs/architecture.md (the file format)."""
        return {
            "drift_px": self.drift_px,
            "hr_shift_px": self.hr_shift_px,
            **self.scan.to_attrs(),
            "ncc": self.qc.ncc,
            "residual_drift_px": self.residual_drift_px,
            "passed": self.qc.passed,
            "min_ncc": self.qc.min_ncc,
            "lr_per_hr": self.qc.lr_per_hr,
            "lr_at_zero_hr": self.qc.lr_at_zero_hr,
            "photons": self.photons,
        }


def write_registered(
    out: str | os.PathLike,
    *,
    lr: np.ndarray,
    hr: np.ndarray,
    attrs: Mapping[str, Any],
    registration: Registration,
) -> Path:
    """Write a registered per-FOV store atomically (see docs/architecture.md).

    Parameters
    ----------
    out : path-like
        The ``{fov}.zarr`` directory; written under a temporary name and renamed into place
        (:func:`fastscan.atomic.atomic_path`), replacing a store fastscan wrote there.
    lr : ndarray
        ``(T, Y, X)`` float32 frames, drift-corrected; stored one frame per chunk.
    hr : ndarray
        ``(scale*Y, scale*X)`` float32 HR target on the LR series' grid; one chunk.
    attrs : mapping
        The ingest attributes (``scale``, pixel sizes, identity, sources, ...); the
        ``registration`` entry is replaced by ``registration``.
    registration : Registration
        What registration found.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    fastscan_attrs = jsonable({**attrs, REGISTRATION: registration.to_attrs()})
    with atomic_path(out) as tmp:
        dest = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        dest.create_array("lr", data=lr, chunks=(1, *lr.shape[1:]), dimension_names=("t", "y", "x"))
        dest.create_array("hr", data=hr, chunks=hr.shape, dimension_names=("y", "x"))
        dest.attrs["fastscan"] = fastscan_attrs
    return out


@dataclass(frozen=True)
class RegisteredStore:
    """An open registered per-FOV store, its scan model already checked.

    Attributes
    ----------
    path : str or os.PathLike
        Where it was opened from (named in errors).
    group : zarr.Group
        The store, read-only.
    attrs : dict
        Its ``fastscan`` attribute: the ingest attributes plus ``registration``.
    scan : ScanModel
        The fitted scan model (required: see :class:`ScanModel`).
    """

    path: str | os.PathLike
    group: zarr.Group
    attrs: dict[str, Any]
    scan: ScanModel

    @property
    def lr(self) -> zarr.Array:
        """The registered frames ``(T, Y, X)``, read lazily."""
        return self.group["lr"]

    @property
    def hr(self) -> zarr.Array:
        """The HR target on the LR grid ``(scale*Y, scale*X)``, read lazily."""
        return self.group["hr"]

    def hr_target(self, *, matched: bool = False) -> np.ndarray:
        """The HR target, float32: as acquired, or ``matched`` into the LR series' units.

        Matched, it is ``lr_per_hr * hr + lr_at_zero_hr``: the target through the line that
        registration fitted between the LR mean and the forward-modelled target, so that every
        FOV's target has its own series' brightness, whatever gain, laser power or dwell (or a
        reconstruction's own scale) gave it its values (``dataset.match_hr_intensity``).

        Raises
        ------
        StoreError
            When ``matched`` and the store has no measured line (a flat target, or a store
            registered before the line was measured).
        """
        hr = np.asarray(self.hr[...], dtype=np.float32)
        if not matched:
            return hr
        qc = self.qc
        if qc.lr_per_hr is None or qc.lr_at_zero_hr is None or not qc.lr_per_hr > 0:
            raise StoreError(
                f"{self.path}: fastscan.registration has no positive lr_per_hr and lr_at_zero_hr (got {qc.lr_per_hr}, "
                f"{qc.lr_at_zero_hr}), which dataset.match_hr_intensity needs: register the FOV again with this version of fastscan "
                "(snakemake --forcerun register_fov)"
            )
        return (np.float32(qc.lr_per_hr) * hr + np.float32(qc.lr_at_zero_hr)).astype(np.float32)

    @property
    def registration(self) -> dict[str, Any]:
        """The raw ``registration`` attribute."""
        return dict(self.attrs[REGISTRATION])

    @property
    def qc(self) -> RegistrationQC:
        """The registration QC (required when asked for: a :class:`StoreError` without it)."""
        return RegistrationQC.from_registration(self.attrs[REGISTRATION], store=self.path)

    @property
    def photons(self) -> Mapping[str, Any] | None:
        """The photon calibration summary, or None when the series was not calibrated."""
        return self.attrs[REGISTRATION].get("photons")


def read_registered(path: str | os.PathLike) -> RegisteredStore:
    """Open a registered per-FOV store and check its scan model.

    Parameters
    ----------
    path : path-like
        The ``{fov}.zarr`` directory written by :func:`write_registered`.

    Returns
    -------
    RegisteredStore

    Raises
    ------
    StoreError
        The store has no ``registration`` attribute, or it lacks ``line_phase_px`` or
        ``field_fraction``: the message names the store and the key.
    """
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs.get("fastscan", {}))
    registration = attrs.get(REGISTRATION)
    if not isinstance(registration, Mapping):
        raise StoreError(
            f"{path}: not a registered per-FOV store: the attribute fastscan.registration is missing; write it with fastscan.register.register_fov"
        )
    return RegisteredStore(path=path, group=group, attrs=attrs, scan=ScanModel.from_registration(registration, store=path))


def scan_model(path: str | os.PathLike) -> ScanModel:
    """The scan model of the registered store at ``path`` (see :func:`read_registered`)."""
    return read_registered(path).scan


__all__ = [
    "REGISTRATION",
    "Registration",
    "RegistrationQC",
    "RegisteredStore",
    "ScanModel",
    "StoreError",
    "read_registered",
    "scan_model",
    "write_registered",
]
