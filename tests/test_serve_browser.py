"""The page in a real browser (Debian's chromium driven by Playwright): upload a clip, read the answer."""

from __future__ import annotations

import os

import httpx
import pytest

from fixtures_serve import LiveServer, espeak_clips, save_tiny_run

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from voxtrace.serve import create_app

    root = tmp_path_factory.mktemp("browser")
    save_tiny_run(root / "models")
    clip = espeak_clips(root / "clips", count=1)[0]
    with LiveServer(create_app(root / "models")) as live:
        yield live.url, clip


def test_page_uploads_a_clip_and_shows_the_json_answer(server, tmp_path):
    url, clip = server
    expected = httpx.post(f"{url}/api/predict", files={"file": (clip.name, clip.read_bytes())}, timeout=120).json()
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"meeting notes, not audio\n" * 20)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            sync_api.expect(page.locator("#limits")).to_contain_text("Classes:")
            page.set_input_files("#file", str(clip))
            page.click("#analyse")
            sync_api.expect(page.locator("#result")).to_be_visible(timeout=120_000)
            assert page.inner_text("#label") == expected["label"]
            bars = page.locator("#bars .bar")
            assert bars.count() == len(expected["probabilities"])
            shown = {bars.nth(i).get_attribute("data-class"): bars.nth(i).locator(".value").inner_text()
                     for i in range(bars.count())}
            assert shown == {name: f"{100 * p:.1f}%" for name, p in expected["probabilities"].items()}
            for image in ("#spectrogram", "#saliency"):
                assert page.eval_on_selector(image, "img => img.complete && img.naturalWidth > 0")

            page.set_input_files("#file", str(bad))
            page.click("#analyse")
            sync_api.expect(page.locator("#error")).to_contain_text("notes.wav: not an audio file")
            assert page.locator("#result").is_hidden()
        finally:
            browser.close()
