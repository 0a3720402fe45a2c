"""Export a trained generator as a bioimage.io model package, and describe a model directory.

``fastscan export MODEL_DIR --out NAME.bioimageio.zip`` writes a package of the bioimage.io model
specification 0.5 (written and validated with ``bioimageio.spec``) that Fiji (deepImageJ), napari
and ilastik (through ``bioimageio.core``) run without fastscan:

- weights ``pytorch_state_dict`` (fastscan's own ``generator.pth``, unchanged, with the
  architecture :mod:`fastscan.torch_generator`, a file that imports only torch),
  ``torchscript`` (traced) and ``onnx`` (when the ``onnx`` package is installed);
- input ``batch, channel, y, x``: raw intensities of one channel (or, for a generator with
  temporal context, of its k consecutive registered frames as k channels), normalised by a fixed
  ``scale_linear`` with the model's own statistics (``model.json`` ``normalisation.lr``), never by
  per-image percentiles; y and x of ``min + n * step`` px;
- output ``batch, channel, y, x`` tied to the input at the model's scale (``SizeReference``), in
  the model's normalised HR units (the units of fastscan's restored OME-Zarr stores), with a halo of
  the tile overlap fastscan uses times the scale;
- test tensors, a cover (input | restored), a README (training data, metrics, validation),
  the paper's citation, the licence and the authors of the ``export`` configuration;
- ``config.fastscan``: normalisation, scale, tiling, and the frame corrections the network expects
  (line phase and resonant field fraction): the model was trained on frames whose fitted scan
  model was undone, so frames must arrive corrected.

Nothing is downloaded: the description names no URL and no GitHub user, the only fields that
``bioimageio.spec`` checks over the network.

The package is split by concept, lower layers first (no module imports a later one):

- :mod:`~fastscan.export.model`: what a model directory says (:func:`architecture_kwargs`,
  :func:`export_tiling`, training summary, frame corrections, metrics) and :class:`ExportError`;
- :mod:`~fastscan.export.sample`: the test tile (dataset store, sample image or synthetic);
- :mod:`~fastscan.export.weights`: the weight formats: the plain-torch state dict checked
  against fastscan's generator, TorchScript and ONNX;
- :mod:`~fastscan.export.description`: the bioimage.io ``ModelDescr`` (``rdf.yaml``);
- :mod:`~fastscan.export.documents`: the README and the cover image;
- :mod:`~fastscan.export.validate`: the package test (static validation, ``bioimageio.core``);
- :mod:`~fastscan.export.driver`: :func:`export_model`, the driver;
- :mod:`~fastscan.export.info`: :func:`model_info` (``fastscan info``).
"""

from fastscan.export.description import PAPER
from fastscan.export.driver import EXPORT_DEFAULTS, export_model
from fastscan.export.info import model_info
from fastscan.export.model import ARCH_KWARGS, ExportError, architecture_kwargs, export_tiling

__all__ = ["ARCH_KWARGS", "ExportError", "EXPORT_DEFAULTS", "PAPER", "architecture_kwargs", "export_model", "export_tiling", "model_info"]
