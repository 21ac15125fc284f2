"""The page of ``alzmri serve`` in a real browser: Playwright driving Debian's Chromium against a live server on 127.0.0.1.

Skipped, saying why, only where no Chromium is installed (``make test`` installs Debian's
package when it can). With ``ALZMRI_SCREENSHOTS=folder`` the page's screenshots go there (the
README's come from this test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from alzmri.app.config import ServeConfig
from alzmri.app.server import create_app
from alzmri.io.bids import load_scans
from alzmri.training.fit import fit

from conftest import train_config

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serving(config: ServeConfig):
    import uvicorn

    live = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=config.port, log_level="warning"))
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not live.started and time.time() < deadline:
        time.sleep(0.1)
    assert live.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{config.port}/"
    finally:
        live.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def checkpoint(prepared: dict[str, Path]) -> Path:
    if os.environ.get("ALZMRI_SCREENSHOT_MODEL"):  # README screenshots of a real model (with ALZMRI_SCREENSHOT_SCAN)
        return Path(os.environ["ALZMRI_SCREENSHOT_MODEL"])
    return fit(train_config(prepared, epochs=1, run_name="browser")) / "checkpoints" / "best-loss.ckpt"


@pytest.fixture(scope="module")
def server(checkpoint: Path):
    with _serving(ServeConfig(model=checkpoint, port=_free_port(), evidence="occlusion")) as url:
        yield url


def _browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium; 'make test' does it as root)")
def test_token_leaves_the_address_bar(checkpoint: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    token = "browser-token-0123456789"
    with _serving(ServeConfig(model=checkpoint, port=_free_port(), token=token, evidence="none")) as url, sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page()
            page.goto(url + "?token=" + token)
            expect(page.locator("#model-line")).to_contain_text("liu_cnn_compact")  # the API calls carried it
            assert token not in page.url  # history.replaceState: the entry holding it was replaced, not kept
            page.reload()  # kept for this tab only
            expect(page.locator("#model-line")).to_contain_text("liu_cnn_compact")
            other = browser.new_page()  # another tab (and a copied link) has no token
            other.goto(url)
            expect(other.locator("#status")).to_contain_text("token")
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium; 'make test' does it as root)")
def test_upload_see_the_result_and_download_it(server: str, prepared: dict[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("ALZMRI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    scan = Path(os.environ.get("ALZMRI_SCREENSHOT_SCAN") or load_scans(prepared["bids"])["path"].iloc[0])
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            outside: list[str] = []
            page.on("request", lambda request: outside.append(request.url) if not request.url.startswith((server, "data:", "blob:")) else None)
            page.goto(server)
            expect(page.locator("#model-line")).to_contain_text(os.environ.get("ALZMRI_SCREENSHOT_MODEL_NAME", "liu_cnn_compact"))
            page.screenshot(path=str(shots / "serve-empty.png"))
            page.set_input_files("#file", str(scan))
            page.click("#submit")
            expect(page.locator("#result")).to_be_visible(timeout=60_000)
            expect(page.locator("#status")).to_contain_text("done in")
            rows = page.locator("#probabilities tbody tr")
            expect(rows).to_have_count(2)
            shown = page.locator("#predicted").inner_text()
            assert shown in ("CN", "AD")
            for image in ("#scan-image", "#evidence-image"):  # the pictures decoded and laid out
                assert page.eval_on_selector(image, "img => img.complete && img.naturalWidth > 100"), image
            page.screenshot(path=str(shots / "serve-result.png"), full_page=True)
            with page.expect_download() as download:
                page.click("#download-json")
            saved = tmp_path / "result.json"
            download.value.save_as(saved)
            result = json.loads(saved.read_text())
            assert result["predicted"] == shown and sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-4)
            assert result["evidence"]["method"] == "occlusion" and result["images"]["evidence"]

            page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a scan"})
            page.click("#submit")
            expect(page.locator("#status")).to_have_class("error")
            expect(page.locator("#status")).to_contain_text("not a NIfTI")
            assert not errors, errors
            assert not outside, f"the page fetched from elsewhere: {outside}"
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium; 'make test' does it as root)")
def test_progression_section_shows_the_chain(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    from alzmri.generate.config import ProgressionConfig
    from alzmri.generate.fit import train_progression

    from test_export import _checkpoint
    from test_progression import STAGES, make_toy_cache, toy_settings

    cache, split = make_toy_cache(tmp_path, origin="images")
    run = train_progression(ProgressionConfig(cache=cache, split=split, out=tmp_path / "runs", width=4, batch_size=4, epochs=1, progress=False, mlflow=False, samples=1))
    import torch

    from alzmri.io.checkpoint import read_checkpoint, write_checkpoint

    model = _checkpoint(tmp_path / "stage.ckpt", "small_cnn_2d", {}, toy_settings(16, "images").model_dump(mode="json"), classes=tuple(STAGES))
    saved = read_checkpoint(model)
    head = [k for k, v in saved["state_dict"].items() if k.endswith("bias") and v.shape == (len(STAGES),)][-1]
    saved["state_dict"][head] = torch.tensor([20.0, 0, 0, 0])  # the model says NonDemented: the whole chain follows
    write_checkpoint(model, saved["state_dict"], saved["hparams"])
    image = tmp_path / "slice.png"
    Image.fromarray((np.random.default_rng(1).random((20, 20)) * 255).astype(np.uint8)).save(image)
    with _serving(ServeConfig(model=model, progression=run, port=_free_port())) as url, sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            expect(page.locator("#model-line")).to_contain_text("small_cnn_2d")
            page.set_input_files("#file", str(image))
            page.click("#submit")
            expect(page.locator("#progression")).to_be_visible(timeout=60_000)
            predicted = page.locator("#predicted").inner_text()
            expect(page.locator("#progression-start")).to_have_text(predicted)
            expect(page.locator("#progression-note")).to_contain_text("not a prediction of this person's future")
            assert predicted == STAGES[0]
            expect(page.locator("#progression-steps tbody tr")).to_have_count(len(STAGES) - 1)
            expect(page.locator("#progression-steps tbody tr").first).to_contain_text(STAGES[1])
            assert page.eval_on_selector("#progression-image", "img => img.complete && img.naturalWidth > 100")
            assert page.get_attribute("#download-gif", "href").startswith("blob:")
            assert not errors, errors
        finally:
            browser.close()
