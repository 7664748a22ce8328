"""The voxtrace web app: upload or record a clip, see which generator made it, how sure, and why.

`create_app(model_dir)` loads every checkpoint under `model_dir` once and serves

- `GET /`: the page (plain HTML + JS from `static/`, nothing from the network);
- `GET /api/info`: classes, models and limits;
- `POST /api/predict` (multipart field `file`): `{"label", "probabilities", "filename", "duration_s", "models",
  "checkpoints"}`; with `?images=true` also base64 PNGs of the log-mel spectrogram (`spectrogram_png`) and a
  saliency overlay (`saliency_png`, `saliency_method`).

Refusals are JSON `{"detail": message}`: 413 for an upload over `max_upload_mb` (checked while the body
streams in), 422 for a clip longer than `max_duration_s`, an empty file, a file that is not audio or a
request without a file. Uploads are written to a private temporary folder under a fixed name and removed
after the answer; no path from a request is ever opened.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from voxtrace.serve.engine import Attributor, display_spectrogram
from voxtrace.serve.upload import Upload, UploadError, receive_upload, remove_upload

STATIC_DIR = Path(__file__).parent / "static"
UPLOAD_FIELD = "file"
log = logging.getLogger("voxtrace.serve")


def create_app(model_dir: str | os.PathLike, max_upload_mb: float = 50, max_duration_s: float = 600) -> FastAPI:
    """The FastAPI app serving the ensemble of checkpoints under `model_dir` (loaded here, once)."""
    if not max_upload_mb > 0:
        raise ValueError(f"max_upload_mb must be > 0. Received: max_upload_mb={max_upload_mb!r}")
    if not max_duration_s > 0:
        raise ValueError(f"max_duration_s must be > 0. Received: max_duration_s={max_duration_s!r}")
    attributor = Attributor(model_dir)
    max_bytes = int(max_upload_mb * 2**20)
    app = FastAPI(title="voxtrace", summary="synthetic speech attribution", docs_url=None, redoc_url=None)
    app.state.attributor = attributor
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

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
            "sample_rate": attributor.cfg.audio.sample_rate,
        }

    @app.post("/api/predict")
    async def predict(request: Request, images: bool = False):
        try:
            upload, tmp_dir = await receive_upload(request, UPLOAD_FIELD, max_bytes)
        except UploadError as err:
            return JSONResponse({"detail": err.message}, status_code=err.status)
        try:
            return await run_in_threadpool(attribute_upload, attributor, upload, max_duration_s, images)
        except UploadError as err:
            return JSONResponse({"detail": err.message}, status_code=err.status)
        finally:
            remove_upload(tmp_dir)

    return app


def attribute_upload(attributor: Attributor, upload: Upload, max_duration_s: float, images: bool = False) -> dict:
    """Check, decode and attribute a stored upload; raises `UploadError` (422) naming what is wrong."""
    from voxtrace.data.audio import AudioError, audio_duration, load_audio

    sample_rate = attributor.cfg.audio.sample_rate
    too_long = f"{upload.filename}: {{:.1f}} s is longer than the {max_duration_s:g} s limit"
    try:
        declared = audio_duration(upload.path)
        if declared > max_duration_s:
            raise UploadError(422, too_long.format(declared))
        x = load_audio(upload.path, sample_rate=sample_rate)
    except AudioError as err:
        raise UploadError(422, f"{upload.filename}: {err.reason}") from None
    duration = len(x) / sample_rate
    if duration > max_duration_s:
        raise UploadError(422, too_long.format(duration))
    try:
        probs = attributor.predict(upload.path)
    except ValueError as err:
        raise UploadError(422, str(err).replace(str(upload.path), upload.filename)) from None
    top = int(np.argmax(probs))
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


def _images(attributor: Attributor, x: np.ndarray, class_index: int, duration: float) -> dict:
    """Base64 PNGs of the clip's log-mel spectrogram and of the saliency overlay for `class_index`."""
    from voxtrace.explain.plots import figure_png, saliency_figure, spectrogram_figure

    cfg = attributor.cfg
    spectrogram = spectrogram_figure(display_spectrogram(x, cfg), duration, cfg.features.fmax)
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
