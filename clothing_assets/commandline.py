"""What the `clothing-assets` commands share: a parser whose mistakes are one `error:` line and
whose help shows defaults, option types checked like the settings they stand for, and `run`,
which turns a configuration error into that same line (exit status 2)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from clothing_assets.settings import VARIABLES, ConfigurationError

USAGE_EXIT = 2


_VARIABLE = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default. An option whose default is None falls back to the variable
    its help names; the help then shows that variable's default (from settings, where it is
    stated once). An on/off switch and an empty text show none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.nargs == 0 or action.default == "" or "%(default)" in text:
            return text
        if action.default is not None:
            return super()._get_help_string(action)
        names = [n for n in _VARIABLE.findall(text) if n in VARIABLES]
        fallback = VARIABLES[names[0]].default_value() if names else None
        if fallback is None:
            return text
        return f"{text} (default: {fallback})"


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser (and its subcommands' parsers) that reports a usage mistake as one
    `error:` line naming the option, and formats help with HelpFormatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"error: {message} (see `{self.prog} --help`)\n")


def setting_type(name: str) -> Callable[[str], Any]:
    """An argparse `type` that parses an option as the variable `name` is parsed, so the option
    and the variable accept the same values; argparse names the option in the error."""
    parse = VARIABLES[name].parse

    def parse_option(raw: str) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r} {exc}") from None

    return parse_option


def positive_int(raw: str) -> int:
    """A whole number >= 1."""
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 1")
    return int(raw)


def port_number(raw: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    if not raw.isdigit() or int(raw) > 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number from 0 to 65535")
    return int(raw)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen command's `func(args) -> exit code`. A configuration
    error (and a registry request that cannot be carried out) is printed as one `error:` line
    with exit status 2, a warehouse locked past the wait the same way with status 1; anything
    else is a bug and keeps its traceback."""
    from clothing_assets.resources.duckdb_warehouse import WarehouseUnavailableError
    from clothing_assets.resources.model_registry import RegistryError

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigurationError, RegistryError) as exc:
        return fail(str(exc))
    except WarehouseUnavailableError as exc:  # locked by another process past the wait
        return fail(str(exc), status=1)


def fail(message: str, status: int = USAGE_EXIT) -> int:
    """Print `error: <message>` (its first line) on stderr; return `status`."""
    print(f"error: {message.strip().splitlines()[0] if message.strip() else 'failed'}",
          file=sys.stderr)  # fmt: skip
    return status
