"""``alzmri serve``: the web page and JSON API a research clinic runs (beside :mod:`alzmri.cli`, above every other layer)."""
