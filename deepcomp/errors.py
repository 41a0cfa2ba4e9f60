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


def brief(text, limit: int = 200) -> str:
    """`text` on one line, at most about `limit` characters, cut after a whole sentence.

    Wrapped libraries' messages run to paragraphs (torch.load's is ~500 characters); the
    command line prints one line, and a message cut mid-word reads like a bug.
    """
    import re

    s = " ".join(str(text).split())
    if len(s) <= limit:
        return s
    head = s[:limit + 1]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", head)]
    if ends and ends[-1] >= limit // 4:
        return head[:ends[-1]]
    cut = head.rfind(" ")
    return (head[:cut] if cut > limit // 4 else s[:limit]).rstrip(" ,;:") + " ..."


def weights_only_reason(text) -> str | None:
    """What torch.load(weights_only=True) refused, from its message; None if it is not that.

    Its message is a paragraph of upgrade advice around one line that names the refused
    global or opcode (e.g. "unsupported GLOBAL posix.system"): that line is the reason.
    """
    msg = str(text)
    if "Weights only load failed" not in msg:
        return None
    import re

    msg = re.sub(r"\x1b\[[0-9;]*m", "", msg)
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    for ln in lines:
        if "WeightsUnpickler error:" in ln:
            ln = ln.split("WeightsUnpickler error:", 1)[1].strip()
        if ln.startswith(("Unsupported", "Trying to")) or "unsupported" in ln[:40].lower():
            first = re.match(r".*?[.!?](?=\s|$)", ln)
            return brief(first.group(0) if first else ln, 160)
    parts = [p for p in msg.split("\n\n") if p.strip()
             and not p.lstrip().startswith(("Weights only load failed", "Check the documentation"))]
    return brief(parts[0], 160) if parts else "it holds Python objects other than tensors"
