"""Exceptions raised by convexlib.

Every error a user can trigger by a missing file, a missing checkpoint or bad input is one of these (or a
plain ``ValueError`` for malformed arguments), with a message that says what is wrong and how to fix it.
"""

from __future__ import annotations


class ConvexlibError(Exception):
    """Base class for convexlib's own errors."""


class DataNotFoundError(ConvexlibError, FileNotFoundError):
    """A data file or folder the computation needs is not under the data root."""


class ModelNotAvailableError(ConvexlibError, RuntimeError):
    """A model checkpoint is neither cached locally nor downloadable (e.g. offline)."""


class CacheError(ConvexlibError, RuntimeError):
    """A cache entry could not be read or written."""
