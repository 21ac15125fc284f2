"""Schemathesis against the OpenAPI schema of ``alzmri serve``: generated requests to every operation, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from alzmri.app.config import ServeConfig
from alzmri.app.server import create_app

from test_export import _checkpoint

pytestmark = pytest.mark.slow


def _app(folder: Path):
    from alzmri.preprocessing.config import PreprocessConfig

    folder.mkdir(parents=True, exist_ok=True)
    ckpt = _checkpoint(folder / "model.ckpt", "liu_cnn_compact", {"input_size": 16}, PreprocessConfig(size=16, spacing=2.0, skull_strip="none").model_dump(mode="json"))
    return create_app(ServeConfig(model=ckpt, evidence="none"))


APP = _app(Path(__import__("tempfile").mkdtemp(prefix="alzmri-schema-")))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_makes_the_server_fail(case) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:200]}"
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}  # every refusal is one JSON error line
