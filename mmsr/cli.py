"""The ``mmsr`` command line.

Each command group lives in a small ``cli`` module next to the code it drives and exposes
``register(subparsers)``; this file lists those modules explicitly (no import-time
registration). Heavy imports happen inside the command functions, so ``mmsr --help`` is fast.
``run(argv)`` runs one command in-process for code that holds a command line; code that holds
values calls the typed functions the commands call (``run_eval``, ``train_grpo``, …).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mmsr import __version__
from mmsr.redact import redact_text

# One line per command group; each module defines ``register(subparsers)`` and sets ``func`` on
# its parsers via ``set_defaults(func=...)``; a group listed below returns its own subparsers.
COMMAND_MODULES: tuple[str, ...] = (
    "mmsr.protocol.cli",
    "mmsr.rewards.cli",
    "mmsr.search.cli",
    "mmsr.world.cli",
    "mmsr.data.cli",
    "mmsr.eval.rollout_cli",
    "mmsr.train.cli",
    "mmsr.demo.cli",
    "mmsr.search.local.cli",
    "mmsr.eval.cli",
    "mmsr.inspect.cli",
)
# Subcommands of a group whose packages sit above the group's own, added to the subparsers the
# group's ``register`` returns: ``mmsr train warmstart`` runs the trainers and the evaluation,
# ``mmsr train verl`` is an integration. Named here, where every layer may be named.
GROUP_SUBCOMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "mmsr.train.cli": ("mmsr.warmstart.cli", "mmsr.integrations.verl.cli"),
}


class _CliLogFilter(logging.Filter):
    """Masks secrets (a url's user:password, registered API keys) in every log line (httpx
    logs whole urls) and, unless verbose, drops httpx's per-request INFO lines."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            not self.verbose
            and record.name.startswith("httpx")
            and record.levelno < logging.WARNING
        ):
            return False
        text = record.getMessage()
        masked = redact_text(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


def configure_logging(verbose: bool) -> None:
    """Log lines on stderr; httpx's per-request INFO lines only with ``-v``, and never with a
    password from a url (``--policy openai:http://user:pw@host/v1``). Only the handler made
    here is filtered: loggers' own levels stay as they are (a host program's, or pytest's)."""
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for handler in root.handlers:
        if handler not in before:
            handler.addFilter(_CliLogFilter(verbose))


def _user_error(err: BaseException) -> str | None:
    """The one line a user sees for ``err``, or None for a programming error (a traceback).

    Bad files and values are ``ValueError``/``OSError``; a chat API that stays unreachable is
    a ``ChatError`` (looked up only if ``mmsr.chat_client`` was imported, to keep this module
    cheap); a ``RecursionError`` is input nested deeper than a parser recurses, where no reader
    named the file."""
    chat = sys.modules.get("mmsr.chat_client")
    if isinstance(err, ValueError | OSError) or (chat and isinstance(err, chat.ChatError)):
        text = str(err)
    elif isinstance(err, RecursionError):
        text = "an input is nested too deeply to read (run with -v for the traceback)"
    else:
        return None
    return redact_text(" ".join(text.split()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsr", description="Teach multimodal models to search only when they need to."
    )
    parser.add_argument("--version", action="version", version=f"mmsr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        group = importlib.import_module(name).register(subparsers)
        for sub in GROUP_SUBCOMMAND_MODULES.get(name, ()):
            importlib.import_module(sub).register(group)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    # Commands with config overrides (``--section.field VALUE``) set ``takes_overrides`` and
    # receive the arguments argparse does not know as ``args.overrides``; others reject them.
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "takes_overrides", False):
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def run(argv: Sequence[str]) -> int:
    """Run one ``mmsr`` command in this process, as ``main`` does, but leaving logging as it
    is and errors raised; returns the command's exit code (2: a group without a command)."""
    parser = build_parser()
    args = _parse(parser, list(argv))
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    configure_logging(args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:  # RuntimeError: ChatError, RecursionError
        line = _user_error(err)
        if line is None or (args.verbose and isinstance(err, RecursionError)):
            raise
        print(f"mmsr: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
