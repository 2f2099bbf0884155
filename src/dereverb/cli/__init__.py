"""The ``dereverb`` command: one module per subcommand in this package.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules only turn flags into configs and call one library function; heavy imports happen
inside ``run`` so ``dereverb --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings

from ..errors import DereverbError

# Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("info", "rirs", "prepare", "train", "enhance", "stream", "export", "evaluate", "compare", "make_testset",
            "demo")
# Spellings that still parse but are not shown: ``-o`` is ``--output`` in every command, and was
# ``--out`` in evaluate, make-testset and compare.
HIDDEN_ALIASES = ("--out",)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="dereverb", description="Remove reverberation from speech recordings."
    )
    parser.add_argument("--version", action="version", version=f"dereverb {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        for q in command_parsers(p):
            if q is not p:  # an action's own parser (rirs simulate|analyze)
                q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show full tracebacks on errors")
            q.set_defaults(_parser=q)  # the usage an unknown flag prints
            for action in q._actions:  # what help, usage and errors show; parsing still knows the alias
                action.option_strings = [s for s in action.option_strings if s not in HIDDEN_ALIASES]
    return parser


def command_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and the parsers of its sub-actions, recursively."""
    found = [parser]
    for action in parser._actions:
        for child in (action.choices or {}).values() if isinstance(action.choices, dict) else ():
            found += command_parsers(child)
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's usage, not the top level's
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        if not args.debug:
            warnings.showwarning = _warning_line
        return _run(args)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, like an error (``--debug`` keeps Python's format with its source)."""
    print(f"dereverb: warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except DereverbError as e:
        if args.debug:
            traceback.print_exc()
        print(f"dereverb: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions, ... raised outside our own checks
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"dereverb: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dereverb: interrupted", file=sys.stderr)
        return 130
