"""The FastAPI app of ``alzmri serve``: one page, a JSON API, bounded work, JSON errors, nothing kept.

* ``GET /`` the page (its script and style served from the package: no CDN); ``GET /api/health``;
  ``GET /api/model``; ``POST /api/predict`` (multipart ``file``, optional ``age``);
  ``GET /openapi.json`` the schema (FastAPI's Swagger page is off: it loads from a CDN).
* Before a body is read (:class:`Gate`): the token, then a place among ``--workers`` running
  and ``--queue`` waiting uploads (429 when none is free); the body is counted as it arrives
  (chunked too) and past ``--max-upload-mb`` the answer is 413. Every error is JSON ``{"error": "one line"}``, and the
  server keeps serving after it.
* Each upload lives in its own temporary folder, removed when the answer is sent (copied to
  ``--keep-uploads`` first when asked). With ``--token`` every ``/api`` call but ``health``
  needs ``Authorization: Bearer TOKEN`` (401 otherwise, before any upload is accepted).
"""

from __future__ import annotations

import hmac
import json
import shutil
import tempfile
import threading
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from alzmri.app.config import ServeConfig
from alzmri.app.service import Service
from alzmri.utils.errors import AlzmriError, first_line

STATIC = Path(str(resources.files("alzmri.app") / "static"))


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Admission:
    """At most ``workers + queue`` uploads in the server at once; the rest are refused (429)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers, self.queue, self.active, self.lock = workers, queue, 0, threading.Lock()

    @property
    def capacity(self) -> int:
        return self.workers + self.queue

    def enter(self) -> bool:
        with self.lock:
            if self.active >= self.capacity:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


def _bearer(header: bytes, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (scheme case-insensitive, RFC 6750)."""
    scheme, _, credentials = header.decode("latin-1").strip().partition(" ")
    # header bytes arrive as latin-1 text: compared as the client's bytes against the token's UTF-8
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("latin-1"), token.encode("utf-8"))


CLOSE = {"Connection": "close"}  # a refused body is not read to its end: the connection goes


class Gate:
    """ASGI middleware that decides before any body is read: the token, admission and the size limit.

    * With a token, every ``/api`` call but ``health`` needs ``Authorization: Bearer TOKEN``
      (401 with ``WWW-Authenticate: Bearer``), so an unauthenticated client cannot upload anything.
    * ``POST /api/predict`` takes one of ``workers + queue`` places (429 when none is free),
      held until its answer is sent.
    * A body declared or counted (chunked uploads too) past ``limit`` bytes is answered 413: the
      app's own answer to the cut-off body is replaced.
    * A client that sends nothing for ``chunk_timeout`` seconds in the middle of its body gets 408
      and gives its place back (else a few slow clients could hold every place).
    * Refusals carry ``Connection: close``: the rest of a refused body is not read.
    """

    def __init__(self, app: Any, limit: int, token: str, admission: Admission, chunk_timeout: float = 30.0) -> None:
        self.app, self.limit, self.token, self.admission, self.chunk_timeout = app, limit, token, admission, chunk_timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path, root = scope.get("path", ""), scope.get("root_path", "")
        path = path[len(root) :] if root and path.startswith(root) else path  # the route, also behind a proxy prefix
        if self.token and path.startswith("/api/") and path != "/api/health" and not _bearer(headers.get(b"authorization", b""), self.token):
            await _error(401, "this server needs its token: send 'Authorization: Bearer TOKEN' (open the page as /?token=TOKEN)",
                         {"WWW-Authenticate": "Bearer", **CLOSE})(scope, receive, send)  # fmt: skip
            return
        too_large = f"the upload is larger than this server's limit of {self.limit / 1e6:g} MB (alzmri serve --max-upload-mb)"
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _error(413, too_large, CLOSE)(scope, receive, send)
            return
        upload = scope.get("method") == "POST" and path == "/api/predict"
        if upload and not self.admission.enter():
            await _error(429, f"the server is busy ({self.admission.workers} uploads running, {self.admission.queue} waiting); try again shortly",
                         CLOSE)(scope, receive, send)  # fmt: skip
            return
        seen, refusal, started = 0, None, False

        async def counted() -> dict:
            nonlocal seen, refusal
            if refusal is not None:
                return {"type": "http.disconnect"}
            try:
                with anyio.fail_after(self.chunk_timeout):
                    event = await receive()
            except TimeoutError:
                refusal = _Refused(408, f"the upload stalled (nothing received for {self.chunk_timeout:g} s); send it again")
                raise refusal from None
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > self.limit:
                    refusal = _Refused(413, too_large)
                    raise refusal
            return event

        async def answer(event: dict) -> None:
            nonlocal started
            if event["type"] == "http.response.start":
                if started:
                    return
                started = True
                if refusal is not None:  # the app's answer to the cut-off body (400, 500): ours instead
                    await _error(refusal.status, str(refusal), CLOSE)(scope, receive, send)
                    return
            elif refusal is not None:
                return  # the replaced answer's body
            await send(event)

        try:
            await self.app(scope, counted, answer)
        except _Refused as exc:
            if not started:
                started = True
                await _error(exc.status, str(exc), CLOSE)(scope, receive, send)
        finally:
            if upload:
                self.admission.leave()


def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    """The app, with the model loaded now (once)."""
    service = service or Service(config)
    app = FastAPI(title="alzmri", version=_version(), docs_url=None, redoc_url=None,
                  description="Upload a T1w scan (NIfTI, a zip of one DICOM series) or a slice image; get the model's class probabilities, QC and evidence map.")  # fmt: skip
    admission = Admission(config.workers, config.queue)
    limiter = anyio.CapacityLimiter(config.workers)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Gate, limit=int(config.max_upload_mb * 1e6), token=config.token or "", admission=admission)

    @app.exception_handler(_Refused)
    async def refused(_request: Request, exc: _Refused) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(AlzmriError)
    async def bad_input(_request: Request, exc: AlzmriError) -> JSONResponse:
        return _error(422, first_line(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
        return _error(422, f"bad request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}: {first_line(exc)}); the server is still running")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/health", summary="Liveness: the model is loaded")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.hparams["model_name"], "busy": admission.active}

    @app.get("/api/model", summary="The served model: classes, accepted uploads, preprocessing")
    async def model() -> dict[str, Any]:
        return service.describe()

    @app.post("/api/predict", summary="Predict one upload: class probabilities, QC, evidence map (PNGs and NIfTI as base64)",
              responses={413: {"description": "upload too large"}, 422: {"description": "the upload cannot be used"}, 429: {"description": "busy"}})  # fmt: skip
    async def predict(file: UploadFile = File(..., description="NIfTI (.nii/.nii.gz), zip of one DICOM series, or slice image"),
                      age: float | None = Form(None, ge=0, le=130, description="Age in years (models trained with age only)")) -> dict[str, Any]:  # fmt: skip
        # the token, admission and size limit were checked by Gate before the body was read
        with tempfile.TemporaryDirectory(prefix="alzmri-serve-") as tmp:
            upload = Path(tmp) / "upload"
            await anyio.to_thread.run_sync(_save, file.file, upload)
            result = await anyio.to_thread.run_sync(service.run, upload, age, limiter=limiter)
            result["filename"] = file.filename or ""
            if config.keep_uploads:
                await anyio.to_thread.run_sync(_keep, Path(config.keep_uploads), Path(tmp), result)
            return result

    return app


def _save(source: Any, target: Path) -> None:
    source.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def _keep(folder: Path, tmp: Path, result: dict[str, Any]) -> None:
    target = folder / uuid.uuid4().hex[:12]
    target.mkdir(parents=True)
    for item in tmp.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    (target / "result.json").write_text(json.dumps(result, indent=1))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alzmri")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0"
