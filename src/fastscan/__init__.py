"""fastscan: restore fast, video-rate laser-scanning microscopy to high-resolution quality."""

__version__ = "0.1.0"

__all__ = ["__version__"]
