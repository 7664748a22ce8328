"""The web app over a real uvicorn server: JSON answers, refusals, concurrency, the page's assets."""

from __future__ import annotations

import base64
import queue
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from fixtures_serve import (  # noqa: E402
    SR,
    LiveServer,
    espeak_clips,
    lying_m4a,
    save_tiny_run,
    streamed_webm,
    tone_clip,
)

MAX_UPLOAD_MB = 0.5
MAX_DURATION_S = 4.0
MAX_QUEUE = 10  # room for every request of the concurrency test
PROXY = "https://voxtrace.example.org"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from voxtrace.serve import create_app

    root = tmp_path_factory.mktemp("serve")
    ckpt, cfg = save_tiny_run(root / "models")
    clips = espeak_clips(root / "clips", count=10)
    app = create_app(root / "models", max_upload_mb=MAX_UPLOAD_MB, max_duration_s=MAX_DURATION_S, max_queue=MAX_QUEUE)
    with LiveServer(app) as server:
        yield {"url": server.url, "port": server.port, "ckpt": ckpt, "cfg": cfg, "clips": clips, "root": root}


def reference_probabilities(setup, clip: Path) -> np.ndarray:
    """The checkpoint's own scores of `clip` through the file-based predictor."""
    from voxtrace.inference.checkpoints import load_checkpoint
    from voxtrace.inference.predictor import predict_files

    expected, errors = predict_files(load_checkpoint(setup["ckpt"]), setup["cfg"], [clip], progress=False)
    assert not errors
    return expected[0]


def post_file(url, path: Path, name: str | None = None, images: bool = False, client=None, timeout: float = 120):
    files = {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}
    return (client or httpx).post(f"{url}/api/predict", params={"images": images}, files=files, timeout=timeout)


def test_predict_matches_the_checkpoint(setup):
    clip = setup["clips"][0]
    response = post_file(setup["url"], clip)
    assert response.status_code == 200, response.text
    answer = response.json()
    cfg = setup["cfg"]
    assert list(answer["probabilities"]) == cfg.classes
    expected = reference_probabilities(setup, clip)
    np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-5)
    assert answer["label"] == cfg.classes[int(np.argmax(expected))]
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


def ffprobe_duration(path: Path) -> str:
    """The container's declared duration as ffprobe reads it from the header ('N/A' when there is none)."""
    return subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("name, make, declared", [("long.m4a", lying_m4a, "1.000000"),
                                                  ("long.webm", streamed_webm, "N/A")])
def test_long_clip_refused_after_decoding_no_more_than_the_limit(setup, tmp_path, monkeypatch, name, make, declared):
    """A header claiming 1 s (or nothing) around 10 s of audio: only the limit (+ margin) is decoded, then 422."""
    from voxtrace.data import audio
    from voxtrace.serve.app import DECODE_MARGIN_S

    seconds = MAX_DURATION_S + 6
    clip = make(tmp_path / name, seconds)
    assert ffprobe_duration(clip) == declared
    assert len(audio.load_audio(clip, SR)) / SR == pytest.approx(seconds, abs=0.1)
    decoded_s = []

    def counting_load_audio(path, sample_rate=16000, **kwargs):
        x = real_load_audio(path, sample_rate=sample_rate, **kwargs)
        decoded_s.append(len(x) / sample_rate)
        return x

    real_load_audio = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", counting_load_audio)
    response = post_file(setup["url"], clip)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert clip.name in detail and f"longer than the {MAX_DURATION_S:g} s limit" in detail
    assert decoded_s and max(decoded_s) <= MAX_DURATION_S + DECODE_MARGIN_S + 0.05


def test_clip_of_exactly_the_limit_accepted(setup, tmp_path):
    clip = tone_clip(tmp_path / "limit.wav", MAX_DURATION_S)
    response = post_file(setup["url"], clip)
    assert response.status_code == 200, response.text
    assert response.json()["duration_s"] == pytest.approx(MAX_DURATION_S, abs=1e-3)


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


def serve_args(*argv: str):
    import argparse

    from voxtrace.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_command_binds_to_localhost_by_default():
    args = serve_args("--model-dir", "runs")
    assert (args.host, args.port, args.max_upload_mb, args.max_duration) == ("127.0.0.1", 7860, 50, 600)
    assert (args.max_queue, args.allow_origin) == (4, [])


def test_serve_command_passes_queue_and_origins_to_the_app(setup, monkeypatch):
    """The app `voxtrace serve` builds takes its queue limit and extra origin from the command line."""
    import uvicorn

    from voxtrace.commands import serve

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    args = serve_args("--model-dir", str(setup["root"] / "models"), "--max-queue", "2", "--allow-origin", PROXY)
    assert serve.run(args) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 7860)
    with LiveServer(started["app"]) as server:
        info = httpx.get(f"{server.url}/api/info", headers={"Origin": PROXY}, timeout=30)
        assert info.status_code == 200 and info.json()["max_queue"] == 2
        assert httpx.get(f"{server.url}/api/info", headers={"Origin": "https://other.example.org"},
                         timeout=30).status_code == 403


def test_create_app_refuses_bad_limits(setup):
    from voxtrace.serve import create_app

    with pytest.raises(ValueError, match="max_upload_mb"):
        create_app(setup["root"] / "models", max_upload_mb=0)


def test_create_app_refuses_malformed_allowed_origins(setup):
    from voxtrace.serve import create_app

    for origin in ("voxtrace.example.org", "https://voxtrace.example.org/page", "ftp://voxtrace.example.org"):
        with pytest.raises(ValueError, match="allowed origin"):
            create_app(setup["root"] / "models", allowed_origins=[origin])
    with pytest.raises(ValueError, match="max_queue"):
        create_app(setup["root"] / "models", max_queue=-1)


def cross_site_headers(port: int) -> list[dict]:
    """Requests a page on another site (or a rebound DNS name) could make the browser send to this server."""
    return [
        {"Origin": "https://attacker.example"},
        {"Origin": "null"},  # sandboxed frames and file:// pages
        {"Origin": f"http://127.0.0.1:{port + 1}"},  # another local server is another origin
        {"Origin": f"https://127.0.0.1:{port}"},  # so is another scheme
        {"Host": f"attacker.example:{port}"},  # DNS rebinding: the attacker's name resolving to 127.0.0.1
        {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"},
        {"Host": f"127.0.0.1:{port + 1}"},
    ]


@pytest.mark.parametrize("case", range(7))
def test_other_origins_and_hosts_refused_with_403(setup, case):
    headers = cross_site_headers(setup["port"])[case]
    clip = setup["clips"][3]
    files = {"file": (clip.name, clip.read_bytes(), "audio/wav")}
    response = httpx.post(f"{setup['url']}/api/predict", files=files, headers=headers, timeout=60)
    assert response.status_code == 403, response.text
    refused = "origin" if "Host" not in headers else "host"
    assert response.json()["detail"].startswith(refused)
    assert httpx.get(f"{setup['url']}/api/info", headers=headers, timeout=30).status_code == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_same_origin_requests_accepted(setup, host):
    """The page's own requests: same `Host` and `Origin` as the page, under either loopback name."""
    own = f"{host}:{setup['port']}"
    clip = setup["clips"][3]
    files = {"file": (clip.name, clip.read_bytes(), "audio/wav")}
    response = httpx.post(f"{setup['url']}/api/predict", files=files, timeout=60,
                          headers={"Host": own, "Origin": f"http://{own}"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(list(response.json()["probabilities"].values()),
                               reference_probabilities(setup, clip), atol=1e-5)


@pytest.fixture(scope="module")
def proxied(setup):
    """The same models behind a one-slot queue, with a reverse proxy's origin allowed."""
    from voxtrace.serve import create_app

    app = create_app(setup["root"] / "models", max_duration_s=MAX_DURATION_S, max_queue=1, allowed_origins=[PROXY])
    with LiveServer(app) as server:
        yield server.url


def test_allowed_proxy_origin_accepted(proxied):
    proxy_host = PROXY.split("://")[1]
    via_proxy = httpx.get(f"{proxied}/api/info", headers={"Host": proxy_host, "Origin": PROXY}, timeout=30)
    assert via_proxy.status_code == 200 and via_proxy.json()["max_queue"] == 1
    other_scheme = {"Host": proxy_host, "Origin": f"http://{proxy_host}"}
    assert httpx.get(f"{proxied}/api/info", headers=other_scheme, timeout=30).status_code == 403


def test_full_queue_answers_503_while_decoding_runs_beside_the_model(setup, proxied, monkeypatch):
    """With the model held by a first request, a second is decoded and waits; a third gets 503 + Retry-After.

    Uploads are decoded outside the model call, and the model calls never overlap.
    """
    from voxtrace.data import audio
    from voxtrace.inference import predictor
    from voxtrace.serve.app import RETRY_AFTER_S

    in_model, release = threading.Event(), threading.Event()
    decoded = queue.Queue()
    inside, most_inside, count_lock = [0], [0], threading.Lock()
    real_predict_models, real_load_audio = predictor.predict_models, audio.load_audio

    def held_predict_models(*args, **kwargs):
        with count_lock:
            inside[0] += 1
            most_inside[0] = max(most_inside[0], inside[0])
        in_model.set()
        release.wait(timeout=60)
        try:
            return real_predict_models(*args, **kwargs)
        finally:
            with count_lock:
                inside[0] -= 1

    def reported_load_audio(*args, **kwargs):
        x = real_load_audio(*args, **kwargs)
        decoded.put(len(x))
        return x

    monkeypatch.setattr(predictor, "predict_models", held_predict_models)
    monkeypatch.setattr(audio, "load_audio", reported_load_audio)
    first_clip, second_clip, third_clip = setup["clips"][4:7]
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            first = pool.submit(post_file, proxied, first_clip)
            assert in_model.wait(timeout=60), "the first request never reached the model"
            decoded.get(timeout=5)
            second = pool.submit(post_file, proxied, second_clip)
            decoded.get(timeout=30)  # decoded while the first request holds the model
            busy = post_file(proxied, third_clip, timeout=20)  # answered at once, not queued behind the model
        finally:
            release.set()
        answers = [first.result(timeout=120), second.result(timeout=120)]
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == str(RETRY_AFTER_S) and "busy" in busy.json()["detail"]
    assert most_inside[0] == 1
    monkeypatch.undo()
    for clip, response in zip((first_clip, second_clip), answers):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(list(response.json()["probabilities"].values()),
                                   reference_probabilities(setup, clip), atol=1e-5)
    assert post_file(proxied, third_clip).status_code == 200  # the queue has room again
