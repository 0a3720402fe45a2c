"""Synthetic specimens: cultured cells with mitochondria (sample A) and tissue (sample B).

A specimen is a fluorophore density in ``[0, 1]`` defined in µm (a scene), drawn once and then
rendered on any window at any pixel size, so the same seed and the same physical extent give the
same specimen at any sampling, and slides can be rendered block by block.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from fastscan.simulate.marks import _bbox, _ellipse_radius, _grow_curves, _Marks, _render_marks, _sample_in_ellipses, _window_coords
from fastscan.simulate.params import _FWHM_TO_SIGMA
from fastscan.simulate.random_fields import _interp_matrix, _noise_grid, _noise_points, _sigmoid, _soft_clip, _subkey

logger = logging.getLogger(__name__)

SPECIMENS: tuple[str, ...] = ("mitochondria", "tissue")
"""Specimen kinds known to :func:`render_specimen`."""


class _Scene:
    """A specimen defined in µm over ``extent``; renders any window at any pixel size."""

    extent: tuple[float, float]

    def render(self, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
        raise NotImplementedError


class _MitochondriaScene(_Scene):
    """Cells with a network of mitochondrial tubules and puncta around a dark nucleus."""

    def __init__(self, extent: tuple[float, float], rng: np.random.Generator) -> None:
        self.extent = extent
        self.key = int(rng.integers(0, 2**63))
        self.cells = self._draw_cells(extent, rng)
        self.marks = self._draw_marks(rng)

    @staticmethod
    def _draw_cells(extent: tuple[float, float], rng: np.random.Generator) -> dict[str, NDArray[np.float64]]:
        """Cell outlines on a jittered 40 µm grid, their off-centre nuclei and their haze."""
        height, width = extent
        spacing = 40.0
        ny = int(math.ceil(height / spacing)) + 1
        nx = int(math.ceil(width / spacing)) + 1
        gy = (np.arange(ny) + 0.5) * spacing - 0.5 * (ny * spacing - height)
        gx = (np.arange(nx) + 0.5) * spacing - 0.5 * (nx * spacing - width)
        cy, cx = (g.ravel() for g in np.meshgrid(gy, gx, indexing="ij"))
        cy = cy + rng.uniform(-0.25, 0.25, cy.size) * spacing
        cx = cx + rng.uniform(-0.25, 0.25, cx.size) * spacing
        keep = rng.random(cy.size) < 0.9
        cy, cx = cy[keep], cx[keep]
        k = cy.size
        big = rng.uniform(15.0, 21.0, k)
        small = big * rng.uniform(0.65, 0.9, k)
        angle = rng.uniform(0.0, math.pi, k)
        # The nucleus sits off-centre, as in spread adherent cells.
        off_r = rng.uniform(0.0, 0.3, k) * small
        off_phi = rng.uniform(0.0, 2.0 * math.pi, k)
        na = rng.uniform(4.5, 7.0, k)
        nb = na * rng.uniform(0.7, 0.95, k)
        return {
            "cy": cy,
            "cx": cx,
            "a": big,
            "b": small,
            "angle": angle,
            "ny": cy + off_r * np.sin(off_phi),
            "nx": cx + off_r * np.cos(off_phi),
            "na": na,
            "nb": nb,
            "nangle": angle + rng.normal(0.0, 0.3, k),
            "haze": rng.uniform(0.025, 0.05, k),
        }

    def _allowed(self, owner: NDArray[np.int64], y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether points lie inside their owner's cell and outside its nucleus."""
        cells = self.cells
        o = owner if y.ndim == 1 else owner[:, None]
        in_cell = (
            _ellipse_radius(
                y,
                x,
                cells["cy"][o],
                cells["cx"][o],
                cells["a"][o],
                cells["b"][o],
                cells["angle"][o],
            )
            < 0.97
        )
        out_nucleus = (
            _ellipse_radius(
                y,
                x,
                cells["ny"][o],
                cells["nx"][o],
                cells["na"][o],
                cells["nb"][o],
                cells["nangle"][o],
            )
            > 1.08
        )
        return in_cell & out_nucleus

    def _draw_marks(self, rng: np.random.Generator) -> _Marks:
        """Tubules (some branched) and puncta inside the cells, as Gaussian marks."""
        cells = self.cells
        cy, cx, big, small, angle = (cells[f] for f in ("cy", "cx", "a", "b", "angle"))
        k = cy.size
        allowed = self._allowed
        area = math.pi * big * small
        density = rng.uniform(0.12, 0.25, k)
        owner, sy, sx, r = _sample_in_ellipses(rng, rng.poisson(density * area * 1.6), cy, cx, big, small, angle)
        # Perinuclear crowding: fewer seeds towards the cell edge.
        keep = allowed(owner, sy, sx) & (rng.random(owner.size) < 1.0 - 0.55 * r)
        owner, sy, sx = owner[keep], sy[keep], sx[keep]
        radial = np.arctan2(sy - cells["ny"][owner], sx - cells["nx"][owner])
        heading = radial + rng.normal(0.0, 0.8, owner.size)
        length = np.minimum(1.0 + rng.exponential(3.5, owner.size), 14.0)
        step = 0.1
        y, x, theta, valid = _grow_curves(rng, sy, sx, heading, length, step=step, curvature_sd=0.35, persistence_um=2.0)
        valid &= np.cumprod(allowed(owner, y, x), axis=1).astype(bool)
        width = rng.uniform(0.3, 0.5, owner.size)
        bright = rng.uniform(0.55, 1.0, owner.size)

        # Branches: start at a vertex of a parent, leave at an angle, share its width.
        parents = np.flatnonzero((rng.random(owner.size) < 0.4) & (valid.sum(axis=1) > 3))
        n_valid = valid[parents].sum(axis=1)
        at = (rng.random(parents.size) * (n_valid - 1)).astype(np.int64)
        by, bx = y[parents, at], x[parents, at]
        turn = rng.uniform(0.5, 1.2, parents.size) * rng.choice([-1.0, 1.0], parents.size)
        blen = np.minimum(0.6 + rng.exponential(1.5, parents.size), 5.0)
        y2, x2, _, valid2 = _grow_curves(
            rng,
            by,
            bx,
            theta[parents, at] + turn,
            blen,
            step=step,
            curvature_sd=0.35,
            persistence_um=2.0,
        )
        valid2 &= np.cumprod(allowed(owner[parents], y2, x2), axis=1).astype(bool)

        marks = []
        for yy, xx, vv, w, b in (
            (y, x, valid, width, bright),
            (y2, x2, valid2, width[parents], bright[parents] * rng.uniform(0.8, 1.0, parents.size)),
        ):
            rows, cols = np.nonzero(vv)
            py, px = yy[rows, cols], xx[rows, cols]
            # Brightness varies along a tubule (matrix density, membrane potential).
            modulation = np.clip(0.75 + 0.25 * _noise_points(_subkey(self.key, 1), 1.5, py, px), 0.3, 1.3)
            marks.append(_Marks.lines(py, px, w[rows] * _FWHM_TO_SIGMA, b[rows] * modulation, step))

        p_owner, py, px, _ = _sample_in_ellipses(rng, rng.poisson(0.02 * area), cy, cx, big, small, angle)
        keep = allowed(p_owner, py, px)
        py, px = py[keep], px[keep]
        diameter = rng.uniform(0.3, 0.6, py.size)
        marks.append(_Marks.blobs(py, px, diameter * _FWHM_TO_SIGMA, rng.uniform(0.5, 1.0, py.size)))
        marks = _Marks.concat(marks)
        logger.debug(
            "mitochondria scene: %d cells, %d tubules, %d branches, %d puncta",
            k,
            owner.size,
            parents.size,
            py.size,
        )
        return marks

    def render(self, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
        ys, xs = _window_coords(origin, shape, pixel_size)
        image = np.zeros(shape, dtype=np.float32)
        c = self.cells
        for i in range(c["cy"].size):
            box = _bbox(c["cy"][i], c["cx"][i], c["a"][i] + 2.0, origin, shape, pixel_size)
            if box is None:
                continue
            yy = ys[box[0]][:, None]
            xx = xs[box[1]][None, :]
            r = _ellipse_radius(yy, xx, c["cy"][i], c["cx"][i], c["a"][i], c["b"][i], c["angle"][i])
            rn = _ellipse_radius(yy, xx, c["ny"][i], c["nx"][i], c["na"][i], c["nb"][i], c["nangle"][i])
            cytoplasm = _sigmoid((1.0 - r) * c["b"][i] / 0.6) * (1.0 - 0.8 * _sigmoid((1.0 - rn) * c["nb"][i] / 0.3))
            image[box] = np.maximum(image[box], c["haze"][i] * cytoplasm)
        image *= np.clip(1.0 + 0.35 * _noise_grid(_subkey(self.key, 2), 2.5, ys, xs), 0.2, None)
        image += _render_marks(self.marks, origin=origin, shape=shape, pixel_size=pixel_size)
        return np.clip(_soft_clip(image), 0.0, 1.0)


class _TissueScene(_Scene):
    """Packed epithelial cells (membranes, textured nuclei) and fibrous stroma."""

    _CELL_SPACING = 10.5

    #: Margin (µm) drawn around the field, so that structures cut by its edge are whole.
    _MARGIN = 8.0

    def __init__(self, extent: tuple[float, float], rng: np.random.Generator) -> None:
        # The steps draw from ``rng`` in this order; changing it changes every tissue scene.
        self.extent = extent
        self.key = int(rng.integers(0, 2**63))
        cy, cx = self._place_cells(rng)
        epithelial = self._epithelial_nuclei(rng, cy, cx)
        stromal = self._stromal_nuclei(rng)
        self.nuclei = {f: np.concatenate([epithelial[f], stromal[f]]) for f in epithelial}
        self.chromocentres = self._chromocentres(rng, epithelial)
        self.fibres, n_fibres, n_vertices = self._fibres(rng)
        logger.debug("tissue scene: %d cells, %d stromal nuclei, %d fibres (%d vertices)", cy.size, stromal["cy"].size, n_fibres, n_vertices)

    def _area(self) -> float:
        height, width = self.extent
        return (height + 2 * self._MARGIN) * (width + 2 * self._MARGIN)

    def _uniform_points(self, rng: np.random.Generator, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        height, width = self.extent
        margin = self._MARGIN
        return rng.uniform(-margin, height + margin, n), rng.uniform(-margin, width + margin, n)

    def _cellularity(self, y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Where cells pack the tissue (1) and where stroma fills it (0): a smooth random field."""
        return _sigmoid(_noise_points(_subkey(self.key, 10), 25.0, y, x) / 0.35)

    def _orientation(self, y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        """The local direction of the stroma's fibres (radians), a smooth random field."""
        return 1.2 * _noise_points(_subkey(self.key, 11), 60.0, y, x)

    def _place_cells(self, rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Cell centres on a jittered grid, kept where the tissue is cellular; sets ``centres`` and ``tree``."""
        height, width = self.extent
        margin, g = self._MARGIN, self._CELL_SPACING
        gy = np.arange(-margin, height + margin, g) + 0.5 * g
        gx = np.arange(-margin, width + margin, g) + 0.5 * g
        cy, cx = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))
        cy = cy + rng.uniform(-0.35, 0.35, cy.size) * g
        cx = cx + rng.uniform(-0.35, 0.35, cx.size) * g
        keep = rng.random(cy.size) < self._cellularity(cy, cx)
        cy, cx = cy[keep], cx[keep]
        self.centres = np.column_stack([cy, cx])
        self.tree = cKDTree(self.centres) if cy.size >= 2 else None
        return cy, cx

    def _epithelial_nuclei(self, rng: np.random.Generator, cy: NDArray[np.float64], cx: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
        k = cy.size
        if self.tree is not None:
            neighbour = self.tree.query(self.centres, k=2)[0][:, 1]
        else:
            neighbour = np.full(k, 2.0 * self._CELL_SPACING)
        # A nucleus stays inside its cell: at most ~40 % of the distance to the next centre.
        ea = np.minimum(rng.uniform(2.6, 5.2, k), 0.42 * neighbour)
        jitter = 0.1 * neighbour[:, None] * rng.normal(0.0, 1.0, (k, 2))
        return {
            "cy": cy + jitter[:, 0],
            "cx": cx + jitter[:, 1],
            "a": ea,
            "b": ea * rng.uniform(0.7, 1.0, k),
            "angle": rng.uniform(0.0, math.pi, k),
            "bright": rng.uniform(0.5, 0.85, k),
        }

    def _stromal_nuclei(self, rng: np.random.Generator) -> dict[str, NDArray[np.float64]]:
        n = rng.poisson(self._area() / 500.0)
        sy, sx = self._uniform_points(rng, n)
        keep = rng.random(n) < 0.9 * (1.0 - self._cellularity(sy, sx))
        sy, sx = sy[keep], sx[keep]
        m = sy.size
        # Spindle-shaped stromal nuclei align with the fibres around them.
        return {
            "cy": sy,
            "cx": sx,
            "a": rng.uniform(3.5, 7.0, m),
            "b": rng.uniform(0.9, 1.8, m),
            "angle": self._orientation(sy, sx) + rng.normal(0.0, 0.15, m),
            "bright": rng.uniform(0.45, 0.75, m),
        }

    def _chromocentres(self, rng: np.random.Generator, epithelial: dict[str, NDArray[np.float64]]) -> _Marks:
        """Small bright foci inside the epithelial nuclei."""
        counts = rng.poisson(2.0, epithelial["cy"].size)
        owner, py, px, _ = _sample_in_ellipses(
            rng,
            counts,
            epithelial["cy"],
            epithelial["cx"],
            0.6 * epithelial["a"],
            0.6 * epithelial["b"],
            epithelial["angle"],
        )
        return _Marks.blobs(py, px, rng.uniform(0.15, 0.3, py.size), rng.uniform(0.15, 0.35, py.size))

    def _fibres(self, rng: np.random.Generator) -> tuple[_Marks, int, int]:
        """Crimped collagen fibres of the stroma; returns the marks, the fibre and the vertex count."""
        n = rng.poisson(self._area() / 120.0)
        fy, fx = self._uniform_points(rng, n)
        keep = rng.random(n) < 0.15 + 0.85 * (1.0 - self._cellularity(fy, fx))
        fy, fx = fy[keep], fx[keep]
        f = fy.size
        step = 0.1
        length = rng.uniform(12.0, 60.0, f)
        heading = self._orientation(fy, fx) + rng.normal(0.0, 0.1, f)
        # Start half a length back so that a fibre runs through its seed point.
        fy = fy - 0.5 * length * np.sin(heading)
        fx = fx - 0.5 * length * np.cos(heading)
        y, x, theta, valid = _grow_curves(rng, fy, fx, heading, length, step=step, curvature_sd=0.03, persistence_um=10.0)
        # Collagen crimp: a lateral wave along each fibre.
        s = np.arange(y.shape[1]) * step
        amplitude = rng.uniform(0.1, 0.6, f)[:, None]
        wavelength = rng.uniform(4.0, 10.0, f)[:, None]
        phase = rng.uniform(0.0, 2.0 * math.pi, f)[:, None]
        lateral = amplitude * np.sin(2.0 * math.pi * s[None, :] / wavelength + phase)
        y = y + lateral * np.cos(theta)
        x = x - lateral * np.sin(theta)
        rows, cols = np.nonzero(valid)
        py, px = y[rows, cols], x[rows, cols]
        fwhm = rng.uniform(0.35, 0.9, f)
        bright = rng.uniform(0.18, 0.45, f)
        # Fibres fade where cells pack the tissue.
        fade = 1.0 - 0.85 * self._cellularity(py, px)
        return _Marks.lines(py, px, fwhm[rows] * _FWHM_TO_SIGMA, bright[rows] * fade, step), f, py.size

    def _voronoi(self, tree: cKDTree, ys: NDArray[np.float64], xs: NDArray[np.float64]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Distance to the nearest membrane and to the nearest cell centre, on the window."""
        coarse = 0.5
        gy = np.arange(math.floor(ys[0] / coarse) - 1, math.ceil(ys[-1] / coarse) + 2) * coarse
        gx = np.arange(math.floor(xs[0] / coarse) - 1, math.ceil(xs[-1] / coarse) + 2) * coarse
        points = np.stack(np.meshgrid(gy, gx, indexing="ij"), axis=-1).reshape(-1, 2)
        dist, index = tree.query(points, k=2)
        c1 = self.centres[index[:, 0]]
        c2 = self.centres[index[:, 1]]
        # d2² - d1² is linear in position for a fixed pair of centres, so its scaled value (the
        # distance to their bisector) interpolates exactly between coarse nodes except where the
        # pair of nearest centres changes, which is away from the membranes.
        bisector = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.linalg.norm(c1 - c2, axis=1))
        wy, sy = _interp_matrix((ys - gy[0]) / coarse, cubic=False)
        wx, sx = _interp_matrix((xs - gx[0]) / coarse, cubic=False)
        shape = (gy.size, gx.size)

        def up(values: NDArray[np.float64]) -> NDArray[np.float32]:
            grid = values.reshape(shape).astype(np.float32)
            grid = np.ascontiguousarray(grid[sy : sy + wy.shape[1], sx : sx + wx.shape[1]])
            return (wy @ grid) @ wx.T

        return up(bisector), up(dist[:, 0])

    def render(self, *, origin: tuple[float, float], shape: tuple[int, int], pixel_size: float) -> NDArray[np.float32]:
        key = self.key
        ys, xs = _window_coords(origin, shape, pixel_size)
        if self.tree is not None:
            membrane_dist, centre_dist = self._voronoi(self.tree, ys, xs)
            cellness = _sigmoid((0.75 * self._CELL_SPACING - centre_dist) / 1.0)
            membranes = 0.45 * cellness * np.exp(-0.5 * (membrane_dist / 0.22) ** 2) * (0.75 + 0.25 * _noise_grid(_subkey(key, 20), 6.0, ys, xs))
        else:
            cellness = np.zeros(shape, dtype=np.float32)
            membranes = cellness
        cytoplasm = cellness * (0.2 + 0.05 * _noise_grid(_subkey(key, 21), 2.0, ys, xs) + 0.03 * _noise_grid(_subkey(key, 22), 0.7, ys, xs))
        stroma = (1.0 - cellness) * (0.07 + 0.035 * _noise_grid(_subkey(key, 23), 3.0, ys, xs) + 0.02 * _noise_grid(_subkey(key, 24), 0.8, ys, xs))
        image = (cytoplasm + stroma + membranes).astype(np.float32)
        image += _render_marks(self.fibres, origin=origin, shape=shape, pixel_size=pixel_size)

        nuc = self.nuclei
        chromatin: NDArray[np.float32] | None = None
        for i in range(nuc["cy"].size):
            box = _bbox(nuc["cy"][i], nuc["cx"][i], nuc["a"][i] + 1.0, origin, shape, pixel_size)
            if box is None:
                continue
            if chromatin is None:
                # Chromatin texture, evaluated once per window and only if a nucleus is in it.
                chromatin = 0.6 * _noise_grid(_subkey(key, 25), 0.6, ys, xs) + 0.4 * _noise_grid(_subkey(key, 26), 0.3, ys, xs)
            yy = ys[box[0]][:, None]
            xx = xs[box[1]][None, :]
            r = _ellipse_radius(yy, xx, nuc["cy"][i], nuc["cx"][i], nuc["a"][i], nuc["b"][i], nuc["angle"][i])
            inside_um = (1.0 - r) * nuc["b"][i]
            mask = _sigmoid(inside_um / 0.12)
            envelope = 1.0 + 0.25 * np.exp(-((inside_um / 0.3) ** 2))
            value = nuc["bright"][i] * np.clip(0.78 + 0.28 * chromatin[box], 0.25, 1.3) * envelope
            image[box] = image[box] * (1.0 - mask) + value * mask
        image += _render_marks(self.chromocentres, origin=origin, shape=shape, pixel_size=pixel_size)
        return np.clip(_soft_clip(image), 0.0, 1.0)


def _build_scene(kind: str, extent: tuple[float, float], rng: np.random.Generator) -> _Scene:
    if kind == "mitochondria":
        return _MitochondriaScene(extent, rng)
    if kind == "tissue":
        return _TissueScene(extent, rng)
    raise ValueError(f"unknown specimen kind {kind!r}; choose one of {', '.join(SPECIMENS)}")


def render_specimen(kind: str, *, shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator) -> NDArray[np.float32]:
    """Render a synthetic fluorescent specimen.

    Parameters
    ----------
    kind : {"mitochondria", "tissue"}
        ``"mitochondria"`` (sample A): a few cells with networks of thin tubules (FWHM
        0.3-0.5 µm, some branched) and puncta (0.3-0.6 µm) around dark nuclei, on a dark
        background. ``"tissue"`` (sample B): clusters of packed cells with membranes and
        textured nuclei (5-15 µm) in a fibrous stroma; a more continuous intensity.
    shape : (int, int)
        Pixels ``(Y, X)``.
    pixel_size_um : float
        Pixel size of the rendering in µm.
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    specimen : (Y, X) ndarray of float32
        Fluorophore density in ``[0, 1]``; pixel ``(i, j)`` has its centre at
        ``((i + 0.5) p, (j + 0.5) p)`` µm.

    Notes
    -----
    Geometry is drawn in µm first and then rasterised, so the same seed and the same physical
    extent give the same specimen at any pixel size (up to sampling); counts of objects scale
    with the area.
    """
    if pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}")
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    scene = _build_scene(kind, (shape[0] * pixel_size_um, shape[1] * pixel_size_um), rng)
    return scene.render(origin=(0.0, 0.0), shape=shape, pixel_size=pixel_size_um)
