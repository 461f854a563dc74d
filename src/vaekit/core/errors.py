"""Errors that are the user's to fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations


class VaekitError(Exception):
    """A problem with user input (a path, a file, an option value), not a bug in vaekit."""

    exit_code = 2


class DataError(VaekitError):
    """A data file is missing, corrupt, or not in the expected format."""


class ConfigError(VaekitError):
    """A configuration value or file is invalid."""


class RunError(VaekitError):
    """A run folder is missing, incomplete or inconsistent."""


class TrainingDiverged(VaekitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
