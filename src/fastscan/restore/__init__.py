"""Restoration with a trained generator: tiled inference, whole slides and time series into
OME-Zarr, registered FOVs for evaluation.

Each module has one job; import a name from the module that owns it:

``tiling``
    Tile geometry per axis: blending window, tile positions, tile size, reflection padding.
``prepare``
    Compute precision, folded norms, a generator loaded and made ready for inference.
``receptive``
    The generator's receptive field and training crops, and the automatic tiling they give.
``temporal``
    Temporal windows of a series, for generators with temporal context.
``engine``
    :class:`~fastscan.restore.engine.TileEngine`: batched, blended tiled inference in memory.
``resumable``
    ``OUT.partial`` stores: output checks, plans, progress markers, the work-unit loop.
``ngff``
    OME-Zarr images: pyramid levels, multiscales and OMERO metadata.
``slide``
    Whole slides (workflow rules ``restore_slide_plan``, ``restore_slide_part``, ``restore_slide``).
``series``
    Video-rate series (rule ``restore_series``).
``fov``
    Registered FOVs for evaluation (rules ``restore_fov`` and the fine-tuning ``restore_models``).
"""


class RestoreError(ValueError):
    """A restoration cannot start or finish; the message names the file and the problem."""
