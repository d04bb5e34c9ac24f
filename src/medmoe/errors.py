"""The errors medmoe reports to a user as one line (``medmoe: error: ...``, no traceback).

Two kinds, which the command line tells apart by exit status: the user asked for something that
cannot be (``ConfigError``, status 2, like a bad option or a missing optional extra), or the data or
the run could not be used (``DataError`` and ``TrainingError``, status 1).
"""
from __future__ import annotations


class MedMoEError(Exception):
    """Any failure medmoe explains in one line; its message names the file, row or setting."""


class ConfigError(MedMoEError, ValueError):
    """A configuration value, override or option the user got wrong."""


class DataError(MedMoEError, ValueError):
    """Data that cannot be used."""


class ManifestError(DataError):
    """The manifest as a whole cannot be used (missing file, no usable row)."""


class ImageLoadError(DataError):
    """The image cannot be read (message names the file or sample and the reason)."""


class MissingExtraError(ConfigError, ImportError):
    """An optional dependency (a pip extra, e.g. ``medmoe[export]``) is not installed; says what to install."""


class TrainingError(MedMoEError, RuntimeError):
    """Training cannot go on (e.g. the loss stays non-finite); the last good checkpoint is kept."""
