"""The voxtrace web app: upload or record a clip, see which generator made it, how sure, and why.

`create_app(model_dir)` loads every checkpoint under `model_dir` once and serves

- `GET /`: the page (plain HTML + JS from `static/`, nothing from the network);
- `GET /api/info`: classes, models and limits;
- `POST /api/predict` (multipart field `file`): `{"label", "probabilities", "filename", "duration_s", "models",
  "checkpoints"}`; with `?images=true` also base64 PNGs of the log-mel spectrogram (`spectrogram_png`) and a
  saliency overlay (`saliency_png`, `saliency_method`).

Refusals are JSON `{"detail": message}`: 403 for a request from another origin or for another host
(`guard.SameOriginGuard`), 413 for an upload over `max_upload_mb` (checked while the body streams in), 422
for a clip longer than `max_duration_s` (checked while decoding: at most `max_duration_s` +
`DECODE_MARGIN_S` is ever decoded, whatever the file's header says), an empty file, a file that is not audio
or a request without a file, 503 with `Retry-After` when `max_queue` requests already wait behind the one
being scored. Uploads are written to a private temporary folder under a fixed name and removed after the
answer; no path from a request is ever opened. Decoding runs in worker threads, in parallel; only the
model calls take turns.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from voxtrace.serve.engine import Attributor, display_spectrogram
from voxtrace.serve.guard import Admission, SameOriginGuard, normalize_origin
from voxtrace.serve.upload import Upload, UploadError, receive_upload, remove_upload

STATIC_DIR = Path(__file__).parent / "static"
UPLOAD_FIELD = "file"
DECODE_MARGIN_S = 0.5  # decoded beyond max_duration_s, so a clip of exactly the limit is still accepted
RETRY_AFTER_S = 5  # what a 503 (server busy) asks the client to wait
log = logging.getLogger(__name__)


def create_app(
    model_dir: str | os.PathLike,
    max_upload_mb: float = 50,
    max_duration_s: float = 600,
    max_queue: int = 4,
    host: str = "127.0.0.1",
    allowed_origins: Iterable[str] = (),
    weights=None,
    open_set: bool | None = None,
) -> FastAPI:
    """The FastAPI app serving the ensemble of checkpoints under `model_dir` (loaded here, once).

    `weights` (`NAME=W` items) and `open_set` (default: the checkpoints' `infer.open_set.enabled`) are
    those of `voxtrace predict`.

    `host` is the address the server binds (a name it may be reached by besides the loopback ones);
    `allowed_origins` (`scheme://host[:port]`) are further sites allowed to call it, e.g. a reverse proxy.
    """
    if not max_upload_mb > 0:
        raise ValueError(f"max_upload_mb must be > 0. Received: max_upload_mb={max_upload_mb!r}")
    if not max_duration_s > 0:
        raise ValueError(f"max_duration_s must be > 0. Received: max_duration_s={max_duration_s!r}")
    if not (isinstance(max_queue, int) and max_queue >= 0):
        raise ValueError(f"max_queue must be an integer >= 0. Received: max_queue={max_queue!r}")
    allowed_origins = [normalize_origin(origin) for origin in allowed_origins]
    attributor = Attributor(model_dir, weights=weights, open_set=open_set)
    max_bytes = int(max_upload_mb * 2**20)
    app = FastAPI(title="voxtrace", summary="synthetic speech attribution", docs_url=None, redoc_url=None)
    app.state.attributor = attributor
    app.add_middleware(SameOriginGuard, host=host, allowed_origins=allowed_origins)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    admission = Admission(capacity=max_queue + 1)  # the request being scored and those waiting behind it

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        log.exception("request %s failed", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the server log"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/info")
    async def info():
        return {
            "classes": attributor.classes,
            "models": [run.name for run in attributor.runs],
            "checkpoints": attributor.num_checkpoints,
            "max_upload_mb": max_upload_mb,
            "max_duration_s": max_duration_s,
            "max_queue": max_queue,
            "sample_rate": attributor.cfg.audio.sample_rate,
        }

    @app.post("/api/predict")
    async def predict(request: Request, images: bool = False):
        if not admission.enter():
            busy = f"the server is busy ({max_queue} request(s) already waiting); retry in {RETRY_AFTER_S} s"
            return JSONResponse({"detail": busy}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            upload, tmp_dir = await receive_upload(request, UPLOAD_FIELD, max_bytes)
            try:
                return await run_in_threadpool(attribute_upload, attributor, upload, max_duration_s, images)
            finally:
                remove_upload(tmp_dir)
        except UploadError as err:
            return JSONResponse({"detail": err.message}, status_code=err.status)
        finally:
            admission.leave()

    return app


def attribute_upload(attributor: Attributor, upload: Upload, max_duration_s: float, images: bool = False) -> dict:
    """Decode and attribute a stored upload; raises `UploadError` (422) naming what is wrong."""
    waveforms = decode_upload(upload, attributor.sample_rates, max_duration_s)
    x = waveforms[attributor.cfg.audio.sample_rate]
    duration = len(x) / attributor.cfg.audio.sample_rate
    try:
        probs, top = attributor.predict(waveforms, upload.filename)
    except ValueError as err:
        raise UploadError(422, f"{upload.filename}: {err}") from None
    result = {
        "label": attributor.classes[top],
        "probabilities": {name: float(p) for name, p in zip(attributor.classes, probs)},
        "filename": upload.filename,
        "duration_s": round(duration, 3),
        "models": len(attributor.runs),
        "checkpoints": attributor.num_checkpoints,
    }
    if images:
        result.update(_images(attributor, x, top, duration))
    return result


def decode_upload(upload: Upload, sample_rates, max_duration_s: float) -> dict[int, np.ndarray]:
    """`{rate: waveform}` of the upload; `UploadError` (422) if it is not audio, too short or too long.

    Only `max_duration_s` + `DECODE_MARGIN_S` is decoded: the length is judged from the samples decoded, not
    from the header, which a file may fill with anything.
    """
    from voxtrace.data.audio import MIN_DURATION, AudioError, load_audio

    waveforms = {}
    for rate in sample_rates:
        try:
            x = load_audio(upload.path, sample_rate=rate, duration=max_duration_s + DECODE_MARGIN_S)
        except AudioError as err:
            raise UploadError(422, f"{upload.filename}: {err.reason}") from None
        if len(x) > max_duration_s * rate:
            raise UploadError(422, f"{upload.filename}: longer than the {max_duration_s:g} s limit")
        if len(x) < MIN_DURATION * rate:
            raise UploadError(422, f"{upload.filename}: too short: {len(x) / rate:.3f} s < {MIN_DURATION} s")
        waveforms[rate] = x
    return waveforms


def _images(attributor: Attributor, x: np.ndarray, class_index: int, duration: float) -> dict:
    """Base64 PNGs of the clip's log-mel spectrogram and of the saliency overlay for `class_index`."""
    cfg = attributor.cfg
    try:
        from voxtrace.explain.plots import figure_png, saliency_figure, spectrogram_figure

        db = display_spectrogram(x, cfg)
    except ImportError:  # an exported ensemble served without TensorFlow: scores, no pictures
        return {}
    spectrogram = spectrogram_figure(db, duration, cfg.features.fmax)
    out = {"spectrogram_png": _b64(figure_png(spectrogram))}
    explained = attributor.explain(x, class_index)
    if explained is not None:
        method, maps = explained
        name = attributor.classes[class_index]
        title = f"model input (loudest {attributor.explainer.num_samples / cfg.audio.sample_rate:g} s window), " \
                f"evidence for {name!r}"
        out["saliency_png"] = _b64(figure_png(saliency_figure(maps["image"], {method: maps[method]}, title)))
        out["saliency_method"] = method
    return out


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
