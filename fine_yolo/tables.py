"""The one table renderer: markdown tables (GitHub-flavoured), and the number formats the tables share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; ``None`` cells print as ``-``. Every row must have as many cells as the header."""
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {i} has {len(row)} cells, the header {len(header)}")

    def cell(v: Any) -> str:
        return "-" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def num(x: float | None, spec: str = ".3f") -> str | None:
    """``format(x, spec)``, or None (a ``-`` cell) when there is no value."""
    return None if x is None else format(x, spec)


def signed(x: float | None, spec: str = ".3f") -> str | None:
    """A difference with its sign: ``+0.012``, ``-6.72``; None for no value."""
    return None if x is None else format(x, "+" + spec)


def millions(n: int | float | None, digits: int = 2) -> str | None:
    """``11166560`` -> ``11.17M``."""
    return None if n is None else f"{n / 1e6:.{digits}f}M"


def signed_millions(n: int | float | None, digits: int = 2) -> str | None:
    """``-6720000`` -> ``-6.72M`` (never ``+-``)."""
    return None if n is None else f"{n / 1e6:+.{digits}f}M"
