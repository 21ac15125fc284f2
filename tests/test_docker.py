"""The Dockerfile cannot be built here (no Docker): its pins are checked against the Makefile's, and its health check is run against a live server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_browser import _free_port, _serving
from test_export import VOLUME, _checkpoint

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def test_pinned_cpu_only_and_non_root() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for image in _instructions("FROM"):
        assert re.match(r"python:\d+\.\d+\.\d+-slim-\w+", image), image  # an exact Python release, never :latest
    for pin in ("torch==", "deepbet=="):
        assert re.search(re.escape(pin) + r"[\d.]+", DOCKERFILE).group() == re.search(re.escape(pin) + r"[\d.]+", makefile).group()  # the Makefile's pins
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE and "-c constraints.txt ." in DOCKERFILE
    (user,) = _instructions("USER")
    assert user.strip() not in ("0", "root")
    for copy in _instructions("COPY"):
        if "--from" not in copy:
            for source in copy.split()[:-1]:
                assert (ROOT / source).exists(), source
    assert json.loads(_instructions("ENTRYPOINT")[0]) == ["alzmri", "serve"]
    command = json.loads(_instructions("CMD")[0])
    assert command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--port") + 1] == "8000"


@pytest.mark.slow
def test_health_check_command_against_a_live_server(tmp_path: Path) -> None:
    from alzmri.app.config import ServeConfig

    check = json.loads(re.search(r"CMD (\[.*\])", _instructions("HEALTHCHECK")[0]).group(1))
    assert check[:2] == ["python", "-c"] and ":8000/api/health" in check[2]
    port = _free_port()
    code = check[2].replace(":8000/", f":{port}/")
    model = _checkpoint(tmp_path / "m.ckpt", "liu_cnn_compact", {}, VOLUME, classes=("CN", "AD"))
    # the container serves off localhost, so with a token: the health check must pass without one
    with _serving(ServeConfig(model=model, port=port, token="docker-token-0123456789", evidence="none")):
        assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode != 0  # nothing listening: unhealthy
