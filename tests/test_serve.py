"""The web app over a real uvicorn server: JSON answers, refusals, concurrency, the page's assets."""

from __future__ import annotations

import base64
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from fixtures_serve import LiveServer, espeak_clips, save_tiny_run, tone_clip  # noqa: E402

MAX_UPLOAD_MB = 0.5
MAX_DURATION_S = 4.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from voxtrace.serve import create_app

    root = tmp_path_factory.mktemp("serve")
    ckpt, cfg = save_tiny_run(root / "models")
    clips = espeak_clips(root / "clips", count=10)
    app = create_app(root / "models", max_upload_mb=MAX_UPLOAD_MB, max_duration_s=MAX_DURATION_S)
    with LiveServer(app) as server:
        yield {"url": server.url, "ckpt": ckpt, "cfg": cfg, "clips": clips, "root": root}


def post_file(url, path: Path, name: str | None = None, images: bool = False, client=None):
    files = {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}
    return (client or httpx).post(f"{url}/api/predict", params={"images": images}, files=files, timeout=120)


def test_predict_matches_the_checkpoint(setup):
    from voxtrace.inference.checkpoints import load_checkpoint
    from voxtrace.inference.predictor import predict_files

    clip = setup["clips"][0]
    response = post_file(setup["url"], clip)
    assert response.status_code == 200, response.text
    answer = response.json()
    cfg = setup["cfg"]
    assert list(answer["probabilities"]) == cfg.classes
    expected, errors = predict_files(load_checkpoint(setup["ckpt"]), cfg, [clip], progress=False)
    assert not errors
    np.testing.assert_allclose(list(answer["probabilities"].values()), expected[0], atol=1e-5)
    assert answer["label"] == cfg.classes[int(np.argmax(expected[0]))]
    assert answer["filename"] == clip.name and answer["models"] == 1 and answer["checkpoints"] == 1
    assert answer["duration_s"] == pytest.approx(float(__import__("soundfile").info(clip).duration), abs=0.01)


def test_predict_with_images_returns_pngs(setup):
    answer = post_file(setup["url"], setup["clips"][1], images=True).json()
    for key in ("spectrogram_png", "saliency_png"):
        assert base64.b64decode(answer[key])[:8] == b"\x89PNG\r\n\x1a\n"
    assert answer["saliency_method"] == "gradcam"  # cnn4 has a convolutional feature map


def test_oversize_upload_refused_with_413(setup, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * int(2 * MAX_UPLOAD_MB * 2**20))
    response = post_file(setup["url"], big)
    assert response.status_code == 413
    assert "too large" in response.json()["detail"] and f"{MAX_UPLOAD_MB:g} MB" in response.json()["detail"]


def test_oversize_streamed_upload_refused_while_streaming(setup):
    """A chunked body (no Content-Length) gets its 413 once it crosses the limit, before the body has ended."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(setup["url"])
    boundary = "voxtraceboundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stream.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(
            f"POST /api/predict HTTP/1.1\r\nHost: {url.netloc}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        for chunk in [part] + [b"\1" * 65536] * int(2 * MAX_UPLOAD_MB * 16):  # twice the limit, then stop
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = b""  # the body was never finished: only a check made while streaming can answer now
        while b"too large" not in answer and (data := sock.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"too large" in answer


def test_too_long_clip_refused_with_422(setup, tmp_path):
    clip = tone_clip(tmp_path / "long.wav", MAX_DURATION_S + 2)
    response = post_file(setup["url"], clip)
    assert response.status_code == 422
    assert "long.wav" in response.json()["detail"] and "longer than" in response.json()["detail"]


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("notes.wav", b"these are my meeting notes, not audio\n" * 20, ["notes.wav", "audio"]),
        ("empty.wav", b"", ["empty.wav", "empty"]),
        ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, ["image.png"]),
    ],
)
def test_bad_files_refused_with_clear_422(setup, tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    response = post_file(setup["url"], path)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail
    assert "Traceback" not in response.text and str(tmp_path) not in detail


def test_requests_without_a_file_refused(setup):
    no_file = httpx.post(f"{setup['url']}/api/predict", data={"other": "x"}, files={"x": ("a.txt", b"a")}, timeout=30)
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]
    not_multipart = httpx.post(f"{setup['url']}/api/predict", json={"file": "/etc/passwd"}, timeout=30)
    assert not_multipart.status_code == 422 and "multipart/form-data" in not_multipart.json()["detail"]


def test_client_file_name_is_never_a_path(setup):
    clip = setup["clips"][2]
    response = post_file(setup["url"], clip, name="../../../etc/passwd")
    assert response.status_code == 200  # the bytes are the clip's; the name is only a label
    assert response.json()["filename"] == "passwd"


def test_ten_concurrent_requests_all_answered_correctly(setup):
    clips = setup["clips"]
    with httpx.Client() as client:
        sequential = [post_file(setup["url"], clip, client=client).json() for clip in clips]
    leftovers_before = set(Path(tempfile.gettempdir()).glob("voxtrace-upload-*"))
    with ThreadPoolExecutor(max_workers=10) as pool:
        concurrent = list(pool.map(lambda clip: post_file(setup["url"], clip), clips))
    for clip, response, reference in zip(clips, concurrent, sequential):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["filename"] == clip.name
        assert answer["label"] == reference["label"]
        np.testing.assert_allclose(list(answer["probabilities"].values()),
                                   list(reference["probabilities"].values()), atol=1e-5)
    assert set(Path(tempfile.gettempdir()).glob("voxtrace-upload-*")) <= leftovers_before


def test_page_and_assets_are_served_locally(setup):
    page = httpx.get(setup["url"] + "/", timeout=30)
    assert page.status_code == 200 and 'id="file"' in page.text and 'id="record"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        response = httpx.get(setup["url"] + asset, timeout=30)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text
    assert "https://" not in page.text and "http://" not in page.text
    info = httpx.get(setup["url"] + "/api/info", timeout=30).json()
    assert info["classes"] == setup["cfg"].classes and info["max_upload_mb"] == MAX_UPLOAD_MB


def test_serve_command_binds_to_localhost_by_default():
    import argparse

    from voxtrace.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(["--model-dir", "runs"])
    assert (args.host, args.port, args.max_upload_mb, args.max_duration) == ("127.0.0.1", 7860, 50, 600)


def test_create_app_refuses_bad_limits(setup):
    from voxtrace.serve import create_app

    with pytest.raises(ValueError, match="max_upload_mb"):
        create_app(setup["root"] / "models", max_upload_mb=0)
