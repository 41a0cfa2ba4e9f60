"""The error kinds deepcomp raises for problems a user can fix.

The command line turns any of these into one line on stderr and exit status 2; anything
else is a bug in deepcomp and keeps its traceback.
"""


class DeepcompError(Exception):
    """Base class: a problem with the user's input, file, flags or environment."""


class DczFormatError(DeepcompError):
    """A .dcz file is malformed, truncated, corrupted or from an unsupported version."""


class DataError(DeepcompError):
    """A data set is missing or unreadable (the message names the file and the fix)."""


class ModelError(DeepcompError):
    """A model, checkpoint or architecture name cannot be used as asked."""


class UnsupportedOpError(ModelError):
    """A model contains an operation the stored graph cannot represent."""


class DczTruncatedError(DczFormatError):
    """A .dcz file ends before a structure it declares (truncated download or write)."""


class DczVersionError(DczFormatError):
    """A .dcz file is from a format version this build cannot read."""


class DczChecksumError(DczFormatError):
    """A .dcz section's CRC32 does not match its bytes (the file is corrupted)."""


class OpInputError(DeepcompError, ValueError):
    """A native op (deepcomp.ops) got arrays it cannot use: wrong shape, dtype or range."""
