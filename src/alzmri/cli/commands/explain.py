"""``alzmri explain``."""

from __future__ import annotations

from typing import Any

from alzmri.explain.config import ExplainConfig


def run(config: ExplainConfig) -> dict[str, Any]:
    from alzmri.explain.run import explain

    result = explain(config)
    if "table" in result:  # a slice model: one overlay per slice
        print(f"{len(result['table'])} slice overlays and explain.tsv in {result['out']}")
    else:
        print(f"maps, overlays{', GIFs' if config.gif else ''} and explain.tsv in {result['out']}")
    return result
