"""``alzmri serve``: the web page and JSON API."""

from __future__ import annotations

from alzmri.app.config import ServeConfig


def run(config: ServeConfig) -> None:
    import uvicorn

    from alzmri.app.server import create_app

    app = create_app(config)  # the model is loaded before the port opens: a bad model is an error here, not per request
    where = f"http://{'[' + config.host + ']' if ':' in config.host else config.host}:{config.port}/"
    print(f"serving {config.model} at {where}{'?token=…' if config.token else ''}  (API: {where}api/predict, schema: {where}openapi.json; Ctrl-C stops)")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=5)
