"""The `deepcomp` command.

Each sub-command parses its flags here and calls into the package; user mistakes arrive
as DeepcompError and are printed as one line, never as a traceback.
"""
from __future__ import annotations

import argparse
import sys

from deepcomp.errors import DeepcompError


def _not_ready(name: str):
    def run(args: argparse.Namespace) -> int:
        raise DeepcompError(f"'deepcomp {name}' is not available in this build yet")
    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcomp",
        description="Deep Compression for PyTorch models: prune, share, Huffman-code into a .dcz file and run it.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Sub-commands register themselves with add_<name>_command(sub); see below.
    for name in ("compress", "encode", "decode", "info", "run", "bench"):
        sp = sub.add_parser(name, help=f"{name} (not available yet)")
        sp.set_defaults(func=_not_ready(name))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepcompError as e:
        print(f"deepcomp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepcomp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
