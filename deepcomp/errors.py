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
