"""``alzmri serve``: the API (FastAPI's test client) for every upload type and every bad one, and the server keeps serving."""

from __future__ import annotations

import base64
import gzip
import io
import stat
import tempfile
import threading
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from alzmri.app.config import ServeConfig
from alzmri.app.server import create_app
from alzmri.evaluation.config import PredictConfig
from alzmri.evaluation.evaluate import predict
from alzmri.io.bids import load_scans
from alzmri.training.fit import fit

from conftest import train_config
from test_dicom import write_series
from test_export import _checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(prepared: dict[str, Path]) -> Path:
    return fit(train_config(prepared, epochs=1, run_name="serve")) / "checkpoints" / "best-loss.ckpt"


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> TestClient:
    return TestClient(create_app(ServeConfig(model=checkpoint, max_upload_mb=2, max_unpacked_mb=1)))


@pytest.fixture(scope="module")
def scan(prepared: dict[str, Path]) -> Path:
    return Path(load_scans(prepared["bids"])["path"].iloc[0])


def _post(client: TestClient, name: str, data: bytes, **form: str):
    return client.post("/api/predict", files={"file": (name, data, "application/octet-stream")}, data=form)


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def _still_serving(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"


def test_page_model_and_schema(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/app.js"' in page.text and "http" not in page.text.replace("http-equiv", "")  # no CDN: every asset from this server
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200
    model = client.get("/api/model").json()
    assert model["classes"] == ["CN", "AD"] and model["engine"] == "torch" and model["accepts"] == ["nifti", "nifti-gz", "dicom-zip"]
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/health", "/api/model"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # Swagger UI loads from a CDN: off


def test_nifti_upload_matches_predict(client: TestClient, checkpoint: Path, scan: Path, tmp_path: Path) -> None:
    leftovers = set(Path(tempfile.gettempdir()).glob("alzmri-serve-*"))
    response = _post(client, "whatever.png", scan.read_bytes())  # the name says PNG, the bytes say NIfTI: the bytes win
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["input"]["kind"] == "nifti-gz" and body["predicted"] in ("CN", "AD")
    reference = predict(PredictConfig(checkpoint=checkpoint, inputs=[scan], out=tmp_path / "p.tsv"))
    for name in ("CN", "AD"):
        assert body["probabilities"][name] == pytest.approx(float(reference[f"prob_{name}"].iloc[0]), abs=1e-5)
    for key in ("scan", "evidence"):
        assert Image.open(io.BytesIO(base64.b64decode(body["images"][key]))).format == "PNG"
    heat = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(body["evidence"]["nifti_gz"])))
    assert heat.shape == (16, 16, 16) and np.isfinite(heat.get_fdata()).all()
    assert body["evidence"]["empty"] == (heat.get_fdata().max() <= 0)  # an all-zero map is said to be one
    assert body["qc"]["model_grid"] == "16x16x16" and isinstance(body["qc"]["warnings"], list)
    plain = _post(client, "scan", gzip.decompress(scan.read_bytes()))  # uncompressed .nii
    assert plain.status_code == 200 and plain.json()["input"]["kind"] == "nifti"
    assert plain.json()["probabilities"] == pytest.approx(body["probabilities"], abs=1e-5)
    assert set(Path(tempfile.gettempdir()).glob("alzmri-serve-*")) <= leftovers  # every request's folder removed


def test_dicom_zip_upload(client: TestClient, tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    write_series(folder, 24, rows=24, cols=28, seed=3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tmp_path).as_posix())
    response = _post(client, "series.zip", buffer.getvalue())
    assert response.status_code == 200, response.text
    assert response.json()["input"]["kind"] == "dicom-zip" and sum(response.json()["probabilities"].values()) == pytest.approx(1, abs=1e-4)


def _zip(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "data", "status", "message"), [
    ("big.nii.gz", b"\x1f\x8b" + bytes(3_000_000), 413, "larger than this server's limit of 2 MB"),
    ("empty.nii", b"", 422, "empty"),
    ("noise.bin", bytes(range(256)) * 8, 422, "not a NIfTI"),
    ("fake.nii.gz", gzip.compress(b"not a nifti header" * 50), 422, "holds no NIfTI"),
    ("broken.nii.gz", b"\x1f\x8b\x08\x00garbage", 422, "corrupt gzip"),
    ("bomb.nii.gz", gzip.compress(nib.Nifti1Image(np.zeros((128, 128, 128), np.float32), np.eye(4)).to_bytes()), 422, "unpacks to more than 1 MB"),
    ("escape.zip", _zip({"../../etc/evil.dcm": b"x"}), 422, "unsafe path"),
    ("link.zip", _zip({"a.dcm": b"x"}, link="b.dcm"), 422, "symbolic link"),
    ("bomb.zip", _zip({"bomb.dcm": bytes(5_000_000)}), 422, "limit"),
    ("slice.png", b"\x89PNG\r\n\x1a\n" + bytes(100), 422, "takes a 3D scan"),
    ("one.dcm", bytes(128) + b"DICM" + bytes(400), 422, "single DICOM file"),
])  # fmt: skip
def test_bad_uploads_are_json_errors_and_the_server_keeps_serving(client: TestClient, name: str, data: bytes, status: int, message: str) -> None:
    assert message in _error(_post(client, name, data), status)
    _still_serving(client)


def test_corrupt_nifti_is_one_line(client: TestClient, scan: Path) -> None:
    whole = gzip.decompress(scan.read_bytes())
    assert _error(_post(client, "cut.nii", whole[: len(whole) // 2]), 422)  # a valid header, half the voxels
    assert "bad request" in _error(client.post("/api/predict", data={"age": "1"}), 422)  # no file at all
    assert "bad request" in _error(_post(client, "scan.nii", whole, age="-3"), 422)
    _still_serving(client)


class _Slow:
    """A stand-in service whose uploads wait until released (to fill the worker pool)."""

    def __init__(self, real) -> None:
        self.hparams, self.release, self.started = real.hparams, threading.Event(), threading.Event()
        self.describe = real.describe

    def run(self, path: Path, age: float | None = None) -> dict:
        self.started.set()
        assert self.release.wait(30)
        return {"predicted": "CN"}


def test_a_full_server_answers_429(checkpoint: Path) -> None:
    from alzmri.app.service import Service

    config = ServeConfig(model=checkpoint, workers=1, queue=0)
    slow = _Slow(Service(config))
    with TestClient(create_app(config, service=slow)) as client:  # type: ignore[arg-type]  # one event loop, as under uvicorn
        first: list = []
        worker = threading.Thread(target=lambda: first.append(_post(client, "a.nii", b"x")))
        worker.start()
        assert slow.started.wait(30)
        assert "busy" in _error(_post(client, "b.nii", b"x"), 429)
        slow.release.set()
        worker.join(30)
        assert first[0].status_code == 200 and _post(client, "c.nii", b"x").status_code == 200  # room again


def test_a_run_folder_serves_its_best_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    from alzmri.utils.errors import AlzmriError

    with TestClient(create_app(ServeConfig(model=checkpoint.parent.parent, evidence="none"))) as client:  # RUN → RUN/checkpoints/best-loss.ckpt
        assert client.get("/api/model").json()["classes"] == ["CN", "AD"]
    with pytest.raises(AlzmriError, match="no checkpoints/best-loss.ckpt"):
        create_app(ServeConfig(model=tmp_path))


def test_token_off_localhost(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="--token"):
        ServeConfig(model=checkpoint, host="0.0.0.0")
    token = "s3cret-token-0123456789"
    client = TestClient(create_app(ServeConfig(model=checkpoint, host="0.0.0.0", token=token)))
    assert client.get("/api/health").status_code == 200  # liveness stays open (container health checks)
    refused = client.get("/api/model")
    assert "token" in _error(refused, 401) and refused.headers["www-authenticate"] == "Bearer"
    assert "token" in _error(_post(client, "a.nii", b"x"), 401)
    assert "token" in _error(client.get("/api/model", headers={"Authorization": f"Bearer {token}x"}), 401)
    for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme is case-insensitive (RFC 6750)
        assert client.get("/api/model", headers={"Authorization": f"{scheme} {token}"}).status_code == 200


class _App:
    """A stand-in ASGI app that reads the whole body and answers 200 (or what a parser says of a cut-off body)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict, receive, send) -> None:
        self.calls += 1
        while True:
            try:
                event = await receive()
            except Exception:
                status = 400  # what FastAPI answers when its multipart parser fails
                break
            if event["type"] != "http.request" or not event.get("more_body"):
                status = 200
                break
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _asgi(gate, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, dict, int]:
    """Call ``gate`` once; (status, body, how many body chunks it read)."""
    import anyio

    read, sent = [0], []

    async def receive() -> dict:
        read[0] += 1
        chunk = chunks[read[0] - 1]
        if isinstance(chunk, float):  # a client that stalls this long before its next chunk
            await anyio.sleep(chunk)
            chunk = b""
        return {"type": "http.request", "body": chunk, "more_body": read[0] < len(chunks)}

    async def send(event: dict) -> None:
        sent.append(event)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    anyio.run(gate, scope, receive, send)
    import json

    _asgi.headers = dict(sent[0].get("headers", []))
    return sent[0]["status"], json.loads(b"".join(e.get("body", b"") for e in sent[1:])), read[0]


def test_gate_decides_before_reading_the_body() -> None:
    from alzmri.app.server import Admission, Gate

    inner = _App()
    admission = Admission(workers=1, queue=0)
    gate = Gate(inner, limit=100, token="tok", admission=admission)
    auth = [(b"authorization", b"Bearer tok")]
    status, body, read = _asgi(gate, "/api/predict", [b"x" * 10])
    assert (status, read, inner.calls) == (401, 0, 0) and "token" in body["error"]  # no token: nothing read, the app never called
    assert _asgi.headers[b"connection"] == b"close" and _asgi.headers[b"www-authenticate"] == b"Bearer"
    assert _asgi(gate, "/api/predict", [b"x"], [(b"authorization", "Bearer tök".encode("utf-8"))])[0] == 401  # non-ASCII: compared as bytes, no crash
    assert admission.enter()  # the one place taken
    status, body, read = _asgi(gate, "/api/predict", [b"x" * 10], auth)
    assert (status, read, inner.calls) == (429, 0, 0) and "busy" in body["error"]
    admission.leave()
    status, _, read = _asgi(gate, "/api/predict", [b"x" * 10, b"y" * 10], auth)
    assert (status, read, admission.active) == (200, 2, 0)  # the place is given back after the answer
    status, body, read = _asgi(gate, "/api/predict", [b"x" * 60, b"y" * 60, b"z" * 60], auth)  # chunked: no length declared
    assert status == 413 and read == 2 and "limit of 0.0001 MB" in body["error"] and admission.active == 0
    status, _, _ = _asgi(gate, "/api/predict", [b"x"], auth + [(b"content-length", b"101")])
    assert status == 413 and _asgi.headers[b"connection"] == b"close"
    slow = Gate(inner, limit=100, token="tok", admission=admission, chunk_timeout=0.2)
    status, body, read = _asgi(slow, "/api/predict", [b"x" * 10, 2.0, b"y"], auth)  # a client stalls in mid-body
    assert status == 408 and "stalled" in body["error"] and read == 2 and admission.active == 0


def test_chunked_upload_over_the_limit_is_413(client: TestClient, scan: Path) -> None:
    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.nii\"\r\n\r\n"
        for _ in range(30):
            yield bytes(100_000)

    response = client.post("/api/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert "larger than this server's limit" in _error(response, 413)
    _still_serving(client)


def test_keep_uploads(checkpoint: Path, scan: Path, tmp_path: Path) -> None:
    client = TestClient(create_app(ServeConfig(model=checkpoint, keep_uploads=tmp_path / "kept", evidence="none")))
    body = _post(client, "s.nii.gz", scan.read_bytes()).json()
    assert "evidence" not in body["images"] and body["evidence"]["method"] == "none"
    (kept,) = (tmp_path / "kept").iterdir()
    assert sorted(p.name for p in kept.iterdir()) == ["result.json", "upload.nii.gz"]
    assert (kept / "upload.nii.gz").read_bytes() == scan.read_bytes()


def test_slice_model_and_exported_model(tmp_path: Path, scan: Path) -> None:
    from alzmri.data.slices.store import SliceSetConfig
    from alzmri.evaluation.config import ExportConfig
    from alzmri.evaluation.export import export_model

    settings = SliceSetConfig(origin="images", size=32, channels=1, classes=["NonDemented", "MildDemented"], normalization="z-score")
    ckpt = _checkpoint(tmp_path / "slice.ckpt", "small_cnn_2d", {}, settings.model_dump(mode="json"), classes=("NonDemented", "MildDemented"))
    client = TestClient(create_app(ServeConfig(model=ckpt)))
    image = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)).save(image, format="PNG")
    body = _post(client, "slice.png", image.getvalue()).json()
    assert body["input"]["kind"] == "png" and set(body["probabilities"]) == {"NonDemented", "MildDemented"} and "evidence" in body["images"]
    assert "takes a 2D slice image" in _error(_post(client, "scan.nii.gz", scan.read_bytes()), 422)
    onnx = export_model(ExportConfig(checkpoint=ckpt, out=tmp_path / "slice.onnx"))["out"]
    served = TestClient(create_app(ServeConfig(model=Path(onnx))))
    exported = _post(served, "slice.png", image.getvalue()).json()
    assert exported["engine"] == "onnxruntime" and "evidence" not in exported["images"] and "exported file" in exported["evidence"]["note"]
    assert exported["probabilities"] == pytest.approx(body["probabilities"], abs=1e-4)


def test_concurrent_uploads_get_the_same_answers(checkpoint: Path, scan: Path) -> None:
    """Two workers share one model: Grad-CAM's hooks must not leak into the other worker's forward pass (a 500 under load, found by the load test)."""
    from concurrent.futures import ThreadPoolExecutor

    with TestClient(create_app(ServeConfig(model=checkpoint, workers=2, queue=4))) as client:  # one event loop, as under uvicorn
        alone = _post(client, "s.nii.gz", scan.read_bytes()).json()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _post(client, "s.nii.gz", scan.read_bytes()), range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
    for answer in answers:
        assert answer.json()["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-6)
        assert answer.json()["evidence"]["nifti_gz"] == alone["evidence"]["nifti_gz"]


def test_registered_model_is_served_by_its_uri(prepared: dict[str, Path], tmp_path: Path) -> None:
    import json

    from mlflow import MlflowClient

    from alzmri.utils.errors import AlzmriError

    out = tmp_path / "runs"
    run_dir = fit(train_config(prepared, epochs=1, out=out, run_name="registered", trackers=["mlflow"], register_model="ad-classifier"))
    result = json.loads((run_dir / "result.json").read_text())
    assert result["model_uri"] == "models:/ad-classifier/1"
    from alzmri.training.fit import hashed_fields
    from alzmri.training.registry import register_checkpoint

    plain = train_config(prepared, epochs=1, out=out, trackers=["mlflow"])
    assert hashed_fields(plain) == hashed_fields(plain.model_copy(update={"register_model": "ad-classifier"}))  # registering does not rename (or retrain) a run
    hp = {"preprocess": {}, "model_name": "liu_cnn_compact", "classes": ["CN", "AD"]}
    again = register_checkpoint("ad-classifier", run_dir / "checkpoints" / "best-loss.ckpt", result["mlflow_run_id"], result["tracking_uri"], hp)
    assert again["model_version"] == 1  # the same run registered twice (a repeated end of training): still one version
    store = f"sqlite:///{out / 'mlflow.db'}"
    version = MlflowClient(tracking_uri=store).get_model_version("ad-classifier", "1")
    assert version.tags["alzmri_checkpoint"] == "best-loss.ckpt" and version.tags["alzmri_classes"] == "CN,AD"
    preprocessing = json.loads((run_dir / "checkpoints" / "preprocessing.json").read_text())
    assert preprocessing["size"] == json.loads((prepared["cache"] / "preprocess.json").read_text())["size"]
    for uri in ("models:/ad-classifier/1", "models:/ad-classifier/latest", "models:/ad-classifier"):
        with TestClient(create_app(ServeConfig(model=uri, tracking_uri=store, evidence="none"))) as client:
            assert client.get("/api/model").json()["classes"] == ["CN", "AD"]
    for uri, store_, message in [("models:/ad-classifier/7", store, "ad-classifier"), ("models:/nobody/1", store, "nobody"),
                                 ("models:/ad-classifier/1", None, "--tracking-uri"), ("models:/ad-classifier/1", f"sqlite:///{tmp_path / 'none.db'}", "does not exist"),
                                 ("models:/a/b/c", store, "not a registry model URI")]:  # fmt: skip
        with pytest.raises(AlzmriError, match=message) as caught:
            create_app(ServeConfig(model=uri, tracking_uri=store_))
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "none.db").exists()  # a wrong store is not created


def test_progression_run_beside_the_model(tmp_path: Path) -> None:
    from alzmri.generate.config import ProgressionConfig
    from alzmri.generate.fit import train_progression
    from alzmri.utils.errors import AlzmriError

    from test_progression import STAGES, make_toy_cache, toy_settings

    cache, split = make_toy_cache(tmp_path, origin="images")
    run = train_progression(ProgressionConfig(cache=cache, split=split, out=tmp_path / "runs", width=4, batch_size=4, epochs=1, progress=False, mlflow=False, samples=1))
    model = _checkpoint(tmp_path / "stage.ckpt", "small_cnn_2d", {}, toy_settings(16, "images").model_dump(mode="json"), classes=tuple(STAGES))
    image = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((20, 20)) * 255).astype(np.uint8)).save(image, format="PNG")
    with TestClient(create_app(ServeConfig(model=model, progression=run, evidence="none"))) as client:
        assert client.get("/api/model").json()["progression"]["stages"] == STAGES
        body = _post(client, "slice.png", image.getvalue()).json()
    chain = body["progression"]
    start = STAGES.index(body["predicted"])
    assert chain["start_stage"] == body["predicted"] and "not a prediction of this person's future" in chain["caveat"]
    assert [s["stage"] for s in chain["steps"]] == STAGES[start + 1 :]  # every later stage, none before the predicted one
    for step in chain["steps"]:
        assert step["predicted"] in STAGES and sum(step["probabilities"].values()) == pytest.approx(1, abs=1e-4) and step["mean_abs_change"] >= 0
    if chain["steps"]:
        assert base64.b64decode(chain["image"])[:8] == b"\x89PNG\r\n\x1a\n" and base64.b64decode(chain["gif"])[:6] == b"GIF89a"
    else:
        assert "last stage" in chain["note"]
    from alzmri.app.service import Service

    service = Service(ServeConfig(model=model, progression=run, evidence="none"))  # the chain from each end, whatever the random model predicts
    slice_ = np.load(next((cache / "arrays").glob("*.npy"))).astype(np.float32)
    classify = lambda array: service._probabilities(array, None)  # noqa: E731
    whole = service.progression.answer(slice_, STAGES[0], classify, service.classes)
    assert [s["stage"] for s in whole["steps"]] == STAGES[1:] and whole["image"] and whole["gif"]
    assert "last stage" in service.progression.answer(slice_, STAGES[-1], classify, service.classes)["note"]
    with pytest.raises(AlzmriError, match="progression run's images are 1x16x16"):
        service.progression.answer(np.zeros((1, 8, 8), np.float32), STAGES[0], classify, service.classes)
    other = _checkpoint(tmp_path / "cn-ad.ckpt", "small_cnn_2d", {}, toy_settings(16, "images").model_dump(mode="json"), classes=("CN", "AD"))
    with pytest.raises(AlzmriError, match="not all classes of the served model"):
        create_app(ServeConfig(model=other, progression=run))
    bigger = _checkpoint(tmp_path / "32.ckpt", "small_cnn_2d", {}, toy_settings(32, "images").model_dump(mode="json"), classes=tuple(STAGES))
    with pytest.raises(AlzmriError, match="prepared differently"):
        create_app(ServeConfig(model=bigger, progression=run))
