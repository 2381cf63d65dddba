"""The web demo in a real headless browser: the system's Chromium driven by Playwright.

The page is served from this process on a free local port over tiny models saved in a temporary folder; the
steps are tools/demo_screenshots.py's (which writes docs/demo/ from trained models). Every image the page shows is
fetched back and compared pixel for pixel with what the library computes for the same inputs (samples, completions,
the upscaling gallery, the compressed and decoded images, the heat map), except the completion of a sketch, whose
input is the browser's own drawing of mouse strokes: it is checked for its size, the fitting note and its strokes.
The compressed file the page offers is downloaded and decoded. Skipped, saying why, where Gradio, Playwright or
Chromium is missing: ``pip install -e ".[demo,browser]"`` and ``apt-get install chromium`` (what .ci/run does). Set
DEMO_SCREENSHOTS=FOLDER to keep the screenshots.
"""

import importlib.util
import io
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_transformer import ImageTransformer, ImageTransformerConfig, codec, demo
from image_transformer.files.plots import heat_map
from image_transformer.nn.superres import SuperResolutionConfig, SuperResolutionTransformer

REQUIRED = os.environ.get("DEMO_BROWSER_REQUIRED") == "1"  # .ci/run sets it: there a skip would hide a failure


def missing(reason):
    """Skip this module, saying why; or, where the browser test is required, fail."""
    if REQUIRED:
        raise RuntimeError(f"DEMO_BROWSER_REQUIRED=1 but {reason}")
    pytest.skip(reason, allow_module_level=True)


try:
    import gradio  # noqa: F401
except ImportError:
    missing("Gradio is not installed: pip install -e '.[demo]'")
try:
    from playwright import sync_api
except ImportError:
    missing("Playwright (the browser driver) is not installed: pip install -e '.[browser]'")

_spec = importlib.util.spec_from_file_location("demo_screenshots",
                                               Path(__file__).resolve().parents[1] / "tools" / "demo_screenshots.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
CHROMIUM = tool.find_chromium()
if CHROMIUM is None:
    missing("no Chromium on this machine: apt-get install chromium (or set CHROMIUM_PATH)")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]  # its pandas use
SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, query_length=16, memory_length=16)
STEP_SECONDS = 0.2  # the held-back model's pause at each of its first 24 steps (3 of its 8 rows)


@pytest.fixture(scope="module")
def served():
    """The page over three tiny models (an 8x8 grey generator; the same held back, see below; a 4x4 -> 8x8 RGB
    super-resolution model), saved and loaded as `image-transformer demo --model` does; and a browser page.

    The held-back model ("slow") draws its first 3 rows slowly, then waits at step 24 until the test sets
    ``release``, and draws the rest at once: however busy the machine, it is still sampling when the test looks,
    and only the demo's Cancel (acting at the step after the release) keeps it from finishing."""
    folder = Path(tempfile.mkdtemp(prefix="demo-browser-"))
    torch.manual_seed(0)
    ImageTransformer(ImageTransformerConfig(image_size=(8, 8), channels=1, **SMALL)).save_pretrained(folder / "tiny")
    SuperResolutionTransformer(SuperResolutionConfig(image_size=(8, 8), input_size=(4, 4), channels=3,
                                                     encoder_layers=1, **SMALL)).save_pretrained(folder / "tiny-sr")
    tiny, sr = demo.load_models([str(folder / "tiny"), str(folder / "tiny-sr")])
    slow = demo.DemoModel("slow", demo.load_models([str(folder / "tiny")])[0].model)
    sample, steps, release = slow.model.dist.sample, [0], threading.Event()

    def held_back(*args, **kwargs):
        steps[0] += 1
        if steps[0] <= 24:
            time.sleep(STEP_SECONDS)
        else:
            release.wait(timeout=600)
        return sample(*args, **kwargs)

    slow.model.dist.sample = held_back
    rng = np.random.default_rng(0)
    digit, face = folder / "digit.png", folder / "face.png"
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(digit)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(face)
    app, url = tool.serve([tiny, slow, sr], folder / "work")
    outside = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        page.on("request", lambda r: outside.append(r.url)
                if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
        yield dict(page=page, url=url, tiny=tiny.model, sr=sr.model, digit=digit, face=face, outside=outside,
                   release=release)
        browser.close()
    app.close()


def shots(tmp_path):
    return Path(os.environ["DEMO_SCREENSHOTS"]) if os.environ.get("DEMO_SCREENSHOTS") else tmp_path / "shots"


def shown(page, url):
    """The pixels of an image the page shows, as the server sent them (PNG)."""
    array = np.asarray(Image.open(io.BytesIO(tool.fetch(page, url))))
    return array


def test_every_tab_in_the_browser_shows_what_the_library_computes(served, tmp_path):
    page, model, digit = served["page"], served["tiny"], served["digit"]
    started = time.monotonic()
    results = tool.drive(page, served["url"], digit, served["face"], shots(tmp_path), num=2, rows=3)
    print(f"\nbrowser run of the five tabs: {time.monotonic() - started:.1f} s; per tab (click to result): "
          + ", ".join(f"{tab} {r['seconds']:.2f} s" for tab, r in results.items()))

    samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert results["sample"]["status"].startswith("2 images in")
    assert np.array_equal(shown(page, results["sample"]["image"]), demo.display(samples))

    image = torch.from_numpy(np.asarray(Image.open(digit))[..., None].copy())
    grid = demo.complete(model, image, rows=3, num=4, seed=0)
    assert "4 completions in" in results["complete"]["status"] and "top 3 rows kept" in results["complete"]["status"]
    assert np.array_equal(shown(page, results["complete"]["image"]), demo.display(grid, nrow=6))

    drawn = results["complete-drawing"]["status"]  # the sketch pad's 280x280 picture, fitted to the model
    assert "4 completions in" in drawn and "resized from 280x280 to 8x8 (area)" in drawn
    drawing = shown(page, results["complete-drawing"]["image"])
    assert drawing.shape == demo.display(torch.zeros(6, 8, 8, 1, dtype=torch.uint8), nrow=6).shape
    assert drawing.max() > 100  # the 7's white strokes

    assert "3 samples in" in results["upscale"]["status"]
    assert results["upscale"]["images"] == 5  # the 4x4 input, one sample per temperature, the original
    low, original, _ = demo.upscale_input(served["sr"], served["face"])
    up = demo.upscale(served["sr"], low, 1, 0, original=original)
    pixels = demo.DISPLAY_PIXELS // 2
    expected = [demo.display(low, pixels=pixels)] + [demo.display(s, pixels=pixels) for t in up.samples
                                                     for s in up.samples[t]] + [demo.display(original, pixels=pixels)]
    gallery = [shown(page, src) for src in results["upscale"]["gallery"]]
    assert len(gallery) == len(expected) and all(np.array_equal(a, b) for a, b in zip(gallery, expected))

    status = results["compress"]["status"]
    assert "identical (the image, 64 of 64 values equal)" in status
    stream = tool.fetch(page, results["compress"]["download"])
    assert f"{len(stream):,} bytes" in status and "PNG (optimize)" in status and "WebP lossless" in status
    decoded, _ = codec.decode(stream, model)
    assert torch.equal(decoded[0], image)
    assert np.array_equal(shown(page, results["compress"]["image"]), demo.display(torch.stack([image, image]), 1))

    bpd, bits = demo.likelihood(model, image)
    assert f"{bpd:.3f} bits/dim" in results["likelihood"]["status"]
    heat = heat_map(bits, "bits (-log2 p, summed over the pixel's channels)", title=f"{bpd:.3f} bits/dim")
    assert np.array_equal(shown(page, results["likelihood"]["heat"])[..., :3], heat[..., :3])

    assert served["outside"] == []  # no request left this machine


def test_sampling_shows_rows_as_they_come_does_not_hold_up_other_tabs_and_cancels(served, tmp_path):
    page = served["page"]
    page.goto(served["url"])
    page.locator("#sample-model input").click()
    page.get_by_role("option", name="slow").click()
    tool.set_number(page, "sample-num", 2)
    page.locator("#sample-run").click()
    status = tool.wait_status(page, "sample-status", "rows complete")
    assert "Sampling " in status
    partial = shown(page, tool.image_url(page, "sample-out"))
    assert partial.shape == demo.display(torch.zeros(2, 8, 8, 1, dtype=torch.uint8)).shape
    assert (partial == demo.GREY).mean() > 0.2  # the rows not drawn yet are grey
    tool.shoot(page, shots(tmp_path), "sample-progress")

    tool.open_tab(page, "Likelihood")  # another tab's work goes ahead meanwhile
    tool.upload(page, "likelihood-image", served["digit"])
    tool.image_url(page, "likelihood-image")
    page.locator("#likelihood-run").click()
    tool.wait_status(page, "likelihood-status", "bits/dim")

    tool.open_tab(page, "Sample")
    assert "rows complete" in page.locator("#sample-status").inner_text()  # still sampling
    page.locator("#sample-cancel").click()
    tool.wait_status(page, "sample-status", "Stopping at the next step")  # the cancel is registered
    served["release"].set()  # without the cancel, the sampler would now finish at once
    status = tool.wait_status(page, "sample-status", "Cancelled after")  # the sampler's own last word
    drawn = int(re.search(r"at step (\d+) of 64", status).group(1))
    assert 1 <= drawn <= 25  # stopped by the cancel: at the latest, the step after the release (24 held back)
    time.sleep(1)
    assert "images in" not in page.locator("#sample-status").inner_text()  # it stays stopped


def test_bad_input_gets_a_message_that_says_what_to_do(served, tmp_path):
    page = served["page"]
    page.goto(served["url"])
    tool.open_tab(page, "Complete")
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(wide)
    tool.upload(page, "complete-image", wide)
    tool.image_url(page, "complete-image")
    page.locator("#complete-run").click()
    page.get_by_text("it is 8x12 but the model takes 8x8").wait_for()
    assert 'Tick "fit to the model"' in page.locator("#complete-status").inner_text()
    page.get_by_label("fit to the model (resize and convert an upload that does not match)").check()
    page.locator("#complete-run").click()
    assert "resized from 8x12 to 8x8" in tool.wait_status(page, "complete-status", "completions in", refused=False)
    page.locator("#complete-held-out").click()  # a model saved on its own has no held-out images: it says so
    assert "upload an image instead" in tool.wait_status(page, "complete-input-status", "no held-out images",
                                                         refused=False)
