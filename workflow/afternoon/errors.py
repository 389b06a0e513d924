"""User-facing errors: one line that names the cause (file, key, value, URL)."""


class AfternoonError(Exception):
    """Base class for every error the pipeline reports to the user as one line."""


class ConfigError(AfternoonError):
    """A config key, type or value is wrong."""


class DownloadError(AfternoonError):
    """A dataset file could not be fetched or failed verification."""


class DataFormatError(AfternoonError):
    """A dataset file is not what its format says (magic number, shape, record length)."""
