"""The SrpipeError hierarchy.

The library raises these; the CLI prints ``srpipe: error: <message>`` on one line and exits with
``exit_code``. Messages name the file or key at fault and say what to do about it.
"""

from __future__ import annotations


class SrpipeError(Exception):
    """Base of every error srpipe raises on purpose."""

    exit_code: int = 1


class UsageError(SrpipeError):
    """The user asked for something that cannot work (bad option combination, missing input)."""

    exit_code = 2


class ConfigError(UsageError):
    """A pipeline file or ``--set`` override is invalid (unknown key, wrong type, bad value)."""


class InputError(UsageError):
    """An input path is missing, empty or of the wrong kind."""


class OutputError(SrpipeError):
    """An output location cannot be written (unwritable folder, would overwrite input, ...)."""


class ImageError(SrpipeError):
    """An image file cannot be used. ``path`` names the file."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ImageDecodeError(ImageError):
    """Zero-byte, truncated or corrupt image data."""


class UnsupportedImageError(ImageError):
    """A format, mode or bit depth srpipe does not handle."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured cap (decompression-bomb guard)."""


class StoreError(SrpipeError):
    """An HDF5 patch store is missing, incomplete, or was made with other settings."""


class CheckpointError(SrpipeError):
    """A checkpoint or weight file cannot be read or does not match the model."""


class ExportError(SrpipeError):
    """ONNX export or its verification against PyTorch failed."""


class ModelNotFoundError(UsageError):
    """No model was given and none could be found in the workspace or the package."""


class TrainingError(SrpipeError):
    """Training cannot continue (e.g. repeated non-finite losses)."""
