"""Printing for commands: rich tables on stdout, progress on stderr."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A titled table."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(str(col), justify="right" if col not in (columns[0],) else "left")
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def fmt(value: float) -> str:
    """A metric value, ``n/a`` for NaN."""
    return "n/a" if value != value else f"{value:.3f}"
