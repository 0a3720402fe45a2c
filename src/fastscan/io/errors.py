"""The one exception every reader raises, :class:`InputError`.

Separate so that every module of :mod:`fastscan.io`, and :mod:`fastscan.io.memory` whose
``MemoryLimitError`` derives from it, can import it from the lowest layer.
"""

from __future__ import annotations


class InputError(ValueError):
    """An input file or argument cannot be used; the message names the file and the problem."""


# The public name: tracebacks and workflow logs print ``fastscan.io.InputError``, as users
# (and tests of the workflow logs) know it, and pickles resolve it through the package.
InputError.__module__ = "fastscan.io"
