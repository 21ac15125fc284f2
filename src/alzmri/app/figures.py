"""Figures for the server's answers: made without pyplot (its global state is not safe across the worker threads), returned as base64 PNG."""

from __future__ import annotations

import base64
import io
from typing import Any


def figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """A figure and its axes (``Figure.subplots`` arguments; ``figsize`` for the figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def png(fig: Any) -> str:
    """The figure as a base64 PNG string."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()
