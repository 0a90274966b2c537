"""``cavlog`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Expected failures (:class:`~cavlog_core.errors.CavlogError`, and the operating system's refusals:
a full disk, a read-only or missing folder, no permission, not enough memory) print one line to
stderr and exit 2; SIGINT / SIGTERM stop long commands at their next step (exit 130 / 143);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CavlogError, one_line_warnings

# Order shown in ``cavlog --help``.
SUBCOMMANDS = (
    "synth",
    "inspect",
    "train",
    "finetune",
    "calibrate",
    "predict",
    "evaluate",
    "methods",
    "benchmark",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``cavlog`` parser with every subcommand of :data:`SUBCOMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="cavlog",
        description="Unsupervised brain-lesion segmentation in FLAIR MRI "
        "(constrained Grad-CAM VAE).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cavlog`` console script; returns the exit status."""
    one_line_warnings("cavlog")
    args = build_parser().parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # as given (benchmark --parallel)
    from ._signals import Interrupted

    try:
        return int(args._run(args) or 0)
    except CavlogError as err:
        print(f"cavlog {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the system said no: a full disk, a read-only folder, no permission
        where = f"{err.filename}: " if err.filename else ""
        print(f"cavlog {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"cavlog {args.command}: error: not enough memory (try a smaller --batch-size, "
              "--resolution or model)", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"cavlog {args.command}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"cavlog {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
