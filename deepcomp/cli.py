"""The `deepcomp` command.

Each sub-command parses its flags here and calls into the package; user mistakes arrive
as DeepcompError and are printed as one line, never as a traceback.
"""
from __future__ import annotations

import argparse
import sys

from deepcomp.errors import DeepcompError, brief


def _not_ready(name: str):
    def run(args: argparse.Namespace) -> int:
        raise DeepcompError(f"'deepcomp {name}' is not available in this build yet")
    return run


def _run_bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    # The benchmarks live in the source tree, not in the installed package.
    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    script = folder / "bench_kernels.py"
    if not script.is_file():
        raise DeepcompError(f"the benchmarks folder is not here ({folder}): 'deepcomp bench' runs "
                            "benchmarks/bench_kernels.py from a source checkout of deepcomp")
    cmd = [sys.executable, str(script)] + ([] if args.full else ["--quick"])
    for flag in ("json", "shapes", "batches", "sparsities", "threads", "impls", "note"):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag}", str(value)]
    return subprocess.run(cmd).returncode


def add_bench_command(sub) -> None:
    sp = sub.add_parser("bench", help="kernel benchmark against PyTorch, SciPy and FBGEMM (--quick unless --full)")
    sp.add_argument("--full", action="store_true", help="the whole grid of shapes, batches, sparsities and threads (long)")
    sp.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    sp.add_argument("--shapes", help="comma-separated OUTxIN, e.g. 4096x9216,300x784")
    sp.add_argument("--batches", help="comma-separated batch sizes")
    sp.add_argument("--sparsities", help="comma-separated fractions, e.g. 0.9,0.95")
    sp.add_argument("--threads", help="comma-separated thread counts")
    sp.add_argument("--impls", help="comma-separated subset of implementations")
    sp.add_argument("--note", help="free text stored with the results")
    sp.set_defaults(func=_run_bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcomp",
        description="Deep Compression for PyTorch models: prune, share, Huffman-code into a .dcz file and run it.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Sub-commands register themselves with add_<name>_command(sub); see below.
    add_bench_command(sub)
    from deepcomp.pipeline import add_compress_command
    add_compress_command(sub)
    from deepcomp.codec.commands import add_codec_commands
    add_codec_commands(sub)
    from deepcomp.runtime.run_cmd import add_run_command
    add_run_command(sub)
    from deepcomp.plan import add_sensitivity_command
    add_sensitivity_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepcompError as e:
        # One line whatever the message holds; our own messages are never cut (4000).
        print(f"deepcomp {args.command}: error: {brief(e, 4000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepcomp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
