"""One argument grammar for every ``fine-yolo`` subcommand: ultralytics' ``key=value`` (``yolo train epochs=3``).

A subcommand declares a :class:`Command`: its keys (each an :class:`Option` with a default and one line of help), an
example, and the function that runs it. :meth:`Command.parse` types each value after its default (bool accepts
true/false/1/0/yes/no/on/off), rejects an unknown key with the list of known ones, and names a missing required key.
A command with ``passthrough`` set forwards every key it does not own to ultralytics, typed by ultralytics' own
``smart_value`` (the ``yolo`` CLI's rule). ``help``, ``--help`` or ``-h`` anywhere asks for :meth:`Command.usage`.
:meth:`Command.main` is the whole life of one call (help, parse, run, errors to a message and an exit code), shared by
the ``fine-yolo`` CLI and every ``python -m`` / script entry point. No torch or ultralytics import unless a
passthrough key is given.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from fine_yolo.errors import FineYoloError, UsageError

HELP_TOKENS = frozenset({"help", "--help", "-h"})
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One ``key=value`` argument: its default (whose type types the value) and one line of help."""

    default: Any
    help: str
    required: bool = False
    choices: tuple[str, ...] = ()


@dataclass
class Command:
    """A subcommand: its options, an example, and ``run(args, extra) -> exit code``.

    ``args`` holds every option (typed), ``extra`` the passthrough keys (only when ``passthrough`` is set; it says
    in one line where they go, e.g. "any `yolo train` argument").
    """

    options: dict[str, Option]
    run: Callable[[dict[str, Any], dict[str, Any]], int]
    example: str
    description: str = ""
    passthrough: str = ""
    positional: str = ""  # a bare first argument is this key's value (``fine-yolo check-onnx model.onnx``)
    defaults: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.defaults = {k: o.default for k, o in self.options.items()}

    def wants_help(self, argv: list[str]) -> bool:
        return any(token in HELP_TOKENS for token in argv)

    def usage(self, prog: str, summary: str = "") -> str:
        """Help text for ``prog`` (e.g. ``fine-yolo flops``): summary, description, every key, the example."""
        lines = [f"{prog}: {summary}" if summary else prog]
        if self.description:
            lines += ["", self.description.strip()]
        lines += ["", "keys (key=value):"]
        width = max((len(k) for k in self.options), default=0)
        for key, opt in self.options.items():
            default = "required" if opt.required else f"default {opt.default!r}" if opt.default != "" else "optional"
            choices = f"; one of {', '.join(opt.choices)}" if opt.choices else ""
            lines.append(f"  {key:<{width}}  {opt.help} ({default}{choices})")
        if self.passthrough:
            lines.append(f"  {'...':<{width}}  {self.passthrough}")
        lines += ["", "example:", f"  {self.example}"]
        return "\n".join(lines)

    def main(self, argv: list[str], prog: str, summary: str = "",
             before_run: Callable[[], None] | None = None) -> int:
        """Run one call from raw ``argv``: help if asked, else parse and run; return the exit code.

        A :class:`~fine_yolo.errors.FineYoloError` (bad input, a missing file, ...) becomes ``prog: message`` on
        stderr and its ``exit_code`` (2 for usage errors), never a traceback. ``before_run`` runs after a successful
        parse (the CLI sets its offline defaults there).
        """
        if self.wants_help(argv):
            print(self.usage(prog, summary))
            return 0
        try:
            args, extra = self.parse(argv)
            if before_run is not None:
                before_run()
            return int(self.run(args, extra) or 0)
        except FineYoloError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return e.exit_code

    def parse(self, argv: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (own options typed after their defaults, passthrough keys typed by ultralytics' rule)."""
        out = dict(self.defaults)
        extra: dict[str, Any] = {}
        argv = list(argv)
        if self.positional and argv and "=" not in argv[0]:
            argv[0] = f"{self.positional}={argv[0]}"
        for token in argv:
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise UsageError(f"argument '{token}' is not key=value")
            if key in self.options:
                out[key] = _typed(key, value, self.options[key])
            elif self.passthrough:
                from ultralytics.cfg import smart_value  # the `yolo` CLI's own typing of values

                extra[key] = smart_value(value)
            else:
                raise UsageError(f"unknown argument '{key}' (known: {', '.join(self.options)})")
        missing = [k for k, o in self.options.items() if o.required and out.get(k) in (None, "")]
        if missing:
            raise UsageError(f"missing required argument(s): {', '.join(f'{k}=...' for k in missing)}")
        return out, extra


def _typed(key: str, value: str, opt: Option) -> Any:
    default = opt.default
    if isinstance(default, bool):
        low = value.lower()
        if low not in _TRUE | _FALSE:
            raise UsageError(f"argument '{key}={value}' must be true or false")
        return low in _TRUE
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"argument '{key}={value}' must be an integer") from None
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"argument '{key}={value}' must be a number") from None
    if opt.choices and value not in opt.choices:
        raise UsageError(f"argument '{key}={value}' must be one of {', '.join(opt.choices)}")
    return value


def split_list(value: str, key: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (with ``cast=int``); an empty item or a bad value names ``key``."""
    items = [v.strip() for v in str(value).split(",")]
    if not value or any(not v for v in items):
        raise UsageError(f"argument '{key}={value}' must be a comma-separated list")
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise UsageError(f"argument '{key}={value}': cannot read every item as {cast.__name__}") from None
