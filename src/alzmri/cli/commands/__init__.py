"""One module per CLI command: its config (when the command adds to a layer's config) and ``run``."""
