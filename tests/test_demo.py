"""The functions behind the web demo's tabs, without a browser (tests/test_demo_browser.py drives the page itself)."""

import builtins
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from helpers import free_port
from image_transformer import ImageTransformer, ImageTransformerConfig, codec, demo
from image_transformer.cli import main
from image_transformer.files import folders as zoo
from image_transformer.files.checkpoint import save_checkpoint
from image_transformer.files.pretrained import model_record
from image_transformer.images import area_downsample
from image_transformer.metrics import bits_per_dim
from image_transformer.nn.superres import SuperResolutionConfig, SuperResolutionTransformer

SMALL = dict(hidden_size=16, num_layers=2, num_heads=2, ffn_size=32, dropout=0.0)


def generator(size=(4, 4), channels=1, seed=0, **kw):
    torch.manual_seed(seed)
    values = dict(image_size=size, channels=channels, query_length=8, memory_length=8, **SMALL)
    return ImageTransformer(ImageTransformerConfig(**{**values, **kw})).eval()


def superres(seed=0):
    torch.manual_seed(seed)
    return SuperResolutionTransformer(SuperResolutionConfig(image_size=(4, 4), input_size=(2, 2), channels=3,
                                                            encoder_layers=1, query_length=8, memory_length=8,
                                                            **SMALL)).eval()


def in_step(model):
    """The model, its sampler made to wait at each generation step t until ``seen(t)`` is called: a test that calls
    it for each snapshot sees every step, however busy the machine is. Returns (model, seen)."""
    sample, cond, seen_steps, step = model.dist.sample, threading.Condition(), set(), [0]

    def gated(*args, **kwargs):
        with cond:
            assert cond.wait_for(lambda: step[0] in seen_steps, timeout=30), f"step {step[0]} never seen"
        step[0] += 1
        return sample(*args, **kwargs)

    def seen(t):
        with cond:
            seen_steps.add(t)
            cond.notify_all()

    model.dist.sample = gated
    return model, seen


# ----- Sample ---------------------------------------------------------------------------------------------------
def test_the_grid_grows_in_generation_order_and_ends_as_model_sample():
    model, seen = in_step(generator())
    snaps = []
    for snap in demo.sample_stream(model, 3, temperature=0.9, seed=5, every=0.001):
        snaps.append(snap)
        seen(snap.done)
    final = generator().sample(3, temperature=0.9, generator=torch.Generator().manual_seed(5))
    assert snaps[-1].finished and torch.equal(snaps[-1].images, final)
    order = model.generation_order()
    dones = [s.done for s in snaps]
    assert dones == sorted(dones) and set(range(17)) <= set(dones)  # every step shown, in order
    for snap in snaps[:-1]:  # drawn sub-pixels are the final ones; the others grey
        flat, want = snap.images.reshape(3, -1), final.reshape(3, -1)
        assert torch.equal(flat[:, order[: snap.done]], want[:, order[: snap.done]])
        assert (flat[:, order[snap.done :]] == demo.GREY).all()
    rows = [s.rows_done(model) for s in snaps]
    assert rows == sorted(rows) and rows[-1] == 4 and rows[0] < 4


def test_a_class_conditional_model_samples_a_row_per_class_or_one_class():
    model = generator(num_classes=3)
    snap = list(demo.sample_stream(model, 6, seed=1))[-1]
    assert snap.images.shape == (6, 4, 4, 1) and snap.nrow == 2
    labels = torch.arange(3).repeat_interleave(2)
    assert torch.equal(snap.images, model.sample(6, labels=labels, generator=torch.Generator().manual_seed(1)))
    one = list(demo.sample_stream(model, 2, seed=1, label=2))[-1]
    assert torch.equal(one.images, model.sample(2, labels=torch.tensor([2, 2]),
                                                generator=torch.Generator().manual_seed(1)))


def test_sampling_stops_when_asked_and_when_the_page_goes_away():
    model, seen = in_step(generator())
    stop = threading.Event()
    snaps = []
    for snap in demo.sample_stream(model, 2, stop=stop, every=0.001):
        snaps.append(snap)
        if snap.done >= 2:
            stop.set()
        seen(snap.done)
    assert snaps[-1].cancelled and not snaps[-1].finished and snaps[-1].done == 3  # stopped at the next step
    model = generator()
    sample = model.dist.sample
    model.dist.sample = lambda *args, **kwargs: time.sleep(0.5) or sample(*args, **kwargs)  # 8 s a run
    stream = demo.sample_stream(model, 2, every=0.001)
    next(stream)
    started = time.monotonic()
    stream.close()  # a stream dropped before its end (the page went away) ends the sampler's thread with it
    assert time.monotonic() - started < 5
    assert not any(t.name == "image-transformer-sampling" for t in threading.enumerate())


def test_a_stalled_sampler_sends_no_repeated_frames_but_does_send_a_cancel(monkeypatch):
    monkeypatch.setattr(demo.jobs, "HEARTBEAT", 0.3)
    model, seen = in_step(generator())  # stalls at step 1 until seen(1): never, so it stays stalled
    stop = threading.Event()
    snaps, started = [], time.monotonic()
    for snap in demo.sample_stream(model, 2, stop=stop, every=0.001):
        snaps.append(snap)
        seen(0)
        if time.monotonic() - started > 0.7 and not stop.is_set():
            stop.set()  # Cancel pressed while stalled: shown at once, before the sampler moves
            count = len(snaps)
        elif stop.is_set():
            seen(1)
    # 0.7 s of a stall at every=0.001 s: the first frames and a heartbeat every 0.3 s, not hundreds of copies
    assert 2 <= count <= 6, count
    after = snaps[count]  # the first frame after the cancel came from the changed stop flag, not the heartbeat
    assert after.done == snaps[count - 1].done and after.seconds - snaps[count - 1].seconds < 0.25
    assert snaps[-1].cancelled


def test_sampling_refuses_a_super_resolution_model_and_bad_counts():
    with pytest.raises(ValueError, match="super-resolution model .*cannot sample.*Upscale tab"):
        next(demo.sample_stream(superres(), 2))
    with pytest.raises(ValueError, match="positive integer"):
        next(demo.sample_stream(generator(), 0))


def test_cancel_stops_the_work_of_its_own_session_and_tab():
    stops = demo.Stops()
    mine, other = stops.start("a/sample"), stops.start("b/sample")
    assert stops.stop("a/sample") == 1 and mine.is_set() and not other.is_set()
    stops.finish("a/sample", mine)
    assert stops.stop("a/sample") == 0
    hook = demo.step_reporter(lambda f, d: None, "completing", other)
    other.set()
    with pytest.raises(demo.Cancelled):
        hook(torch.zeros(1, 16, 1), 3)


# ----- Complete -------------------------------------------------------------------------------------------------
def test_complete_shows_the_input_the_completions_and_the_original():
    model = generator()
    image = torch.randint(0, 256, (4, 4, 1), dtype=torch.uint8)
    grid = demo.complete(model, image, rows=2, num=3, seed=7)
    assert grid.shape == (5, 4, 4, 1)
    assert (grid[0, 2:] == demo.GREY).all() and torch.equal(grid[0, :2], image[:2]) and torch.equal(grid[-1], image)
    assert all(torch.equal(c[:2], image[:2]) for c in grid[1:-1])
    want = model.complete(image[None].repeat(3, 1, 1, 1), 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(grid[1:-1], want)
    with pytest.raises(ValueError, match=r"num_rows must be an int in \[0, 4\]"):
        demo.complete(model, image, rows=5)
    with pytest.raises(ValueError, match="class-conditional .*pick a class"):
        demo.complete(generator(num_classes=2), image, rows=2)
    assert demo.complete(generator(num_classes=2), image, rows=2, num=1, label=1).shape == (3, 4, 4, 1)


def test_a_drawing_is_its_composite_and_an_untouched_pad_is_empty():
    black = np.zeros((20, 20, 3), np.uint8)
    empty = {"background": black, "layers": [np.zeros((20, 20, 4), np.uint8)], "composite": black}
    assert demo.drawing_image(empty) is None and demo.drawing_image(None) is None
    stroke = np.zeros((20, 20, 4), np.uint8)
    stroke[5:15, 5:10] = 255
    composite = black.copy()
    composite[5:15, 5:10] = 255
    drawn = demo.drawing_image({"background": black, "layers": [stroke], "composite": composite})
    x, notes = demo.prepare(drawn, (4, 4, 1), fit=True)
    assert x.shape == (4, 4, 1) and (x[1:3, 1] == 255).all() and x.sum() == 2 * 255  # area-averaged 5x5 blocks
    assert any("resized from 20x20 to 4x4" in n for n in notes)


# ----- inputs ---------------------------------------------------------------------------------------------------
def test_inputs_of_the_wrong_size_or_channels_are_explained_and_fitted_on_request(tmp_path):
    with pytest.raises(ValueError, match="no image: upload one"):
        demo.prepare(None, (4, 4, 1))
    Image.fromarray(np.full((6, 8), 40, np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"it is 6x8 but the model takes 4x4\. Tick \"fit to the model\""):
        demo.prepare(tmp_path / "big.png", (4, 4, 1))
    x, notes = demo.prepare(tmp_path / "big.png", (4, 4, 1), fit=True)
    assert x.shape == (4, 4, 1) and (x == 40).all() and notes == ["resized from 6x8 to 4x4, centre 6x6 kept (area)"]
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 200
    with pytest.raises(ValueError, match="it is RGB but the model takes grey images .*colour converted to grey"):
        demo.prepare(colour, (4, 4, 1))
    assert demo.prepare(colour, (4, 4, 1), fit=True)[1] == ["colour converted to grey"]
    grey_rgb, notes = demo.prepare(np.full((4, 4, 3), 9, np.uint8), (4, 4, 1))  # equal channels: nothing lost
    assert (grey_rgb == 9).all() and notes == ["its RGB channels are equal: read as grey"]
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png: cannot read this file as an image"):
        demo.prepare(tmp_path / "text.png", (4, 4, 1))


# ----- Upscale --------------------------------------------------------------------------------------------------
def test_upscale_takes_a_low_or_a_high_resolution_face_and_samples_each_temperature():
    model = superres()
    low = torch.randint(0, 256, (2, 2, 3), dtype=torch.uint8)
    taken, original, notes = demo.upscale_input(model, Image.fromarray(low.numpy()))
    assert torch.equal(taken, low) and original is None and notes == []
    face = torch.randint(0, 256, (4, 4, 3), dtype=torch.uint8)
    taken, original, notes = demo.upscale_input(model, Image.fromarray(face.numpy()))
    assert torch.equal(original, face) and torch.equal(taken, area_downsample(face[None], (2, 2))[0])
    with pytest.raises(ValueError, match=r"the model upscales 2x2 images, or takes a 4x4 one"):
        demo.upscale_input(model, Image.fromarray(np.zeros((5, 5, 3), np.uint8)))
    assert demo.upscale_input(model, Image.fromarray(np.zeros((5, 5, 3), np.uint8)), fit=True)[1].shape == (4, 4, 3)
    result = demo.upscale(model, taken, num=2, seed=3, original=original)
    assert list(result.samples) == [0.8, 0.9, 1.0] and all(s.shape == (2, 4, 4, 3) for s in result.samples.values())
    want = model.sample(taken[None].repeat(2, 1, 1, 1), temperature=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(result.samples[0.9], want)
    with pytest.raises(ValueError, match="not a super-resolution model"):
        demo.upscale(generator(), taken)


# ----- Compress -------------------------------------------------------------------------------------------------
def test_compress_gives_a_file_that_decodes_identically_and_sizes_beside_it():
    model = generator()
    images = torch.randint(0, 256, (2, 4, 4, 1), dtype=torch.uint8)
    result = demo.compress(model, images, names=["a.png", "b.png"], uploaded_bytes=300)
    assert result.identical and torch.equal(result.decoded, images)
    assert torch.equal(codec.decode(result.stream, model)[0], images)  # the file itself, as the CLI decodes it
    names = [name for name, _ in result.sizes]
    assert names[0] == "Image Transformer (this model)" and result.sizes[0][1] == len(result.stream)
    assert "coded pixels alone" in names[1] and result.sizes[1][1] == len(codec.read_header(result.stream)[1])
    assert "PNG (optimize)" in names and "WebP lossless (method 6)" in names and names[-1].startswith("raw")
    assert ("the files as uploaded", 300) in result.sizes and result.sizes[-1][1] == 32
    table = demo.size_table(result)
    assert f"| Image Transformer (this model) | {len(result.stream):,} |" in table and "| 1.00x |" not in table
    expected = float(bits_per_dim(model.log_prob(images)).mean().detach())
    assert result.model_bits_per_dim == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="super-resolution model"):
        demo.compress(superres(), torch.zeros(1, 4, 4, 3, dtype=torch.uint8))


# ----- Likelihood -----------------------------------------------------------------------------------------------
def test_likelihood_is_bits_per_dim_and_its_map_sums_the_bits_of_each_pixel():
    model = generator(channels=3)
    image = torch.randint(0, 256, (4, 4, 3), dtype=torch.uint8)
    bpd, bits = demo.likelihood(model, image)
    log_prob = model.log_prob(image[None]).detach()
    assert bpd == pytest.approx(float(bits_per_dim(log_prob)[0]), rel=1e-5)
    assert bits.shape == (4, 4) and float(bits.sum()) / 48 == pytest.approx(bpd, rel=1e-5)
    assert float(bits[1, 2]) == pytest.approx(float(-log_prob[0, 1, 2].sum() / np.log(2)), rel=1e-5)
    sr = superres()
    bpd_sr, _ = demo.likelihood(sr, image)  # given its own downsampled version
    expected = float(bits_per_dim(sr.log_prob(image[None], area_downsample(image[None], 2)).detach()))
    assert bpd_sr == pytest.approx(expected, rel=1e-5)
    conditional = generator(num_classes=2)
    with pytest.raises(ValueError, match="pick a class"):
        demo.likelihood(conditional, image[..., :1])
    assert demo.likelihood(conditional, image[..., :1], 1)[0] != demo.likelihood(conditional, image[..., :1], 0)[0]


# ----- models ---------------------------------------------------------------------------------------------------
def test_each_tab_says_which_models_cannot_do_its_job():
    gen, sr = generator(), superres()
    assert demo.cannot(gen, "sample") is None and demo.cannot(gen, "likelihood") is None
    assert "not a super-resolution model" in demo.cannot(gen, "upscale", "runs/mnist")
    for job in ("sample", "complete", "compress"):
        assert demo.cannot(sr, job, "runs/sr").startswith("runs/sr is a super-resolution model (2x2 -> 4x4)")
    assert demo.cannot(sr, "upscale") is None and demo.cannot(sr, "likelihood") is None
    with pytest.raises(ValueError, match="unknown job"):
        demo.cannot(gen, "dance")
    assert "super-resolution 2x2 -> 4x4 RGB" in demo.describe(sr)
    assert "class-conditional (3 classes), 4x4 grey" in demo.describe(generator(num_classes=3))


def test_with_no_model_given_the_demo_serves_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "SHIPPED", tmp_path / "none")
    assert demo.load_models([]) == []
    generator().save_pretrained(tmp_path / "m")
    models = demo.load_models([str(tmp_path / "m"), str(tmp_path / "m")])
    assert [m.name for m in models] == [str(tmp_path / "m")]


def test_held_out_images_come_from_a_test_slice_or_the_data_a_run_recorded(tmp_path, tiny_mnist):
    model = generator(size=(6, 6))
    folder = tmp_path / "shipped"
    model.save_pretrained(folder)
    with pytest.raises(ValueError, match="no held-out images.*upload an image instead"):
        demo.held_out_images(folder, model)
    images = torch.randint(0, 256, (5, 6, 6, 1), dtype=torch.uint8)
    safetensors.torch.save_file({"images": images, "indices": torch.arange(5)}, str(folder / zoo.SLICE_NAME))
    held, labels, where = demo.held_out_images(folder, model, limit=3)
    assert torch.equal(held, images[[0, 2, 4]]) and labels is None and "test slice" in where
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", {**model_record(model), "model": model.state_dict(),
                                            "run_info": {"data": f"mnist:{tiny_mnist}", "image_size": None}})
    held, labels, where = demo.DemoModel(str(run), model).held_out()
    assert held.shape == (12, 6, 6, 1) and labels.shape == (12,) and where == f"the test split of mnist:{tiny_mnist}"
    save_checkpoint(run / "checkpoint.pt", {**model_record(model), "model": model.state_dict(),
                                            "run_info": {"data": f"mnist:{tmp_path / 'gone'}"}})
    with pytest.raises(ValueError, match="its held-out images come from mnist:.*gone, which cannot be read from here"):
        demo.held_out_images(run, model)


def test_display_enlarges_small_images_to_show_their_pixels():
    images = torch.arange(2 * 4 * 4, dtype=torch.uint8).reshape(2, 4, 4, 1)
    grid = demo.display(images, nrow=2, pixels=16)
    assert grid.shape == (4 * 4 + 2 * 8, 2 * 16 + 3 * 8)  # grey: (H, W); padding scaled with the pixels
    assert (grid[8:12, 8:12] == 0).all() and (grid[8:12, 12:16] == 1).all()
    assert demo.display(torch.zeros(4, 4, 4, dtype=torch.uint8)).shape[-1] == 3  # alpha left out


# ----- the command line and the page ----------------------------------------------------------------------------
def test_the_demo_command_says_how_to_install_gradio_when_it_is_missing(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError("No module named 'gradio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert main(["demo", "--model", "nowhere"]) == 2
    assert 'the web demo needs Gradio, an optional dependency: pip install -e ".[demo]"' in capsys.readouterr().err


def test_the_page_has_every_tab_and_says_where_no_model_can_serve_it(tmp_path):
    gr = pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    sr = demo.DemoModel("runs/sr", superres())
    app = demo.build_app([sr], tmp_path)
    texts = [b.value or "" for b in app.blocks.values() if isinstance(b, gr.Markdown)]
    tabs = [b.label for b in app.blocks.values() if isinstance(b, gr.Tab)]
    assert {"Sample", "Complete", "Upscale", "Compress", "Likelihood"} <= set(tabs)
    for what in ("sample images", "complete images", "compress images"):
        notice = next(t for t in texts if f"No loaded model can {what}" in t)
        assert "`runs/sr` is a super-resolution model" in notice
    assert not any("No loaded model can upscale" in t for t in texts)
    nothing = demo.build_app([], tmp_path)
    assert sum("**No model is loaded.**" in (b.value or "") for b in nothing.blocks.values()
               if isinstance(b, gr.Markdown)) == 5


def test_requests_out_of_bounds_are_refused_before_any_work(tmp_path):
    model = generator()
    for bad in (-1, 2**63, 1.5, "7"):
        with pytest.raises(ValueError, match="seed must be a whole number"):
            next(demo.sample_stream(model, 2, seed=bad))
    with pytest.raises(ValueError, match="positive integer up to 64"):
        next(demo.sample_stream(model, 65))
    image = torch.zeros(4, 4, 1, dtype=torch.uint8)
    with pytest.raises(ValueError, match="positive integer up to 16"):
        demo.complete(model, image, 2, num=17)
    with pytest.raises(ValueError, match="seed must be a whole number"):
        demo.complete(model, image, 2, seed=-5)
    with pytest.raises(ValueError, match="compress at most 64"):
        demo.compress(model, torch.zeros(65, 4, 4, 1, dtype=torch.uint8))


def test_errors_shown_on_the_page_carry_no_server_paths():
    from image_transformer.demo.page import failure

    text = failure(ValueError("/tmp/gradio/0a1b/upload/face.png: cannot read this file as an image (/srv/x/y.py)"))
    assert text == "**Cannot do that:** face.png: cannot read this file as an image (y.py)"


def test_the_demo_off_loopback_needs_a_password_and_says_so(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="opens the demo to the network"):
        demo.launch([], host="0.0.0.0")
    assert main(["demo", "--host", "0.0.0.0"]) == 2
    assert "--auth USER:PASS" in capsys.readouterr().err
    assert main(["demo", "--host", "0.0.0.0", "--auth", "nopassword"]) == 2
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    seen = {}

    def served(self, **kwargs):  # stands for the server, which returns when it stops
        seen.update(kwargs, workdir=kwargs["allowed_paths"][0], existed=Path(kwargs["allowed_paths"][0]).is_dir())

    monkeypatch.setattr(demo.gradio().Blocks, "launch", served)
    monkeypatch.setattr(zoo, "SHIPPED", tmp_path / "none")
    app = demo.launch([], host="0.0.0.0", auth=("u", "p"), quiet=True)
    assert seen["auth"] == ("u", "p") and seen["show_error"] is False and seen["max_file_size"] == "16mb"
    assert "served to the network" in capsys.readouterr().err
    assert app._queue.max_size == 16
    assert seen["existed"] and not Path(seen["workdir"]).exists()  # the work folder goes when the server stops


def test_the_likelihood_tab_says_the_kept_reference_is_damaged_and_still_gives_the_bits(tmp_path):
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    model = generator()
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / zoo.REFERENCE_NAME).write_text('{"percentiles": ')  # cut short, as by a full disk
    app = demo.build_app([demo.DemoModel(str(tmp_path / "m"), model)], tmp_path / "work")
    score = next(f.fn for f in app.fns.values() if f.api_name == "likelihood")
    _, heat, text = score(str(tmp_path / "m"), np.zeros((4, 4), np.uint8), None, False)
    assert heat is not None and "bits/dim" in text
    assert (f"**The image cannot be placed among held-out ones:** {zoo.REFERENCE_NAME}: the out-of-distribution "
            f"reference is not JSON") in text
    assert str(tmp_path) not in text  # the page is no place for the server's folders


def page_config(html: str) -> dict:
    """The ``window.gradio_config`` a Gradio page carries: the whole app, or only a login form's settings."""
    match = re.search(r"window\.gradio_config = (\{.*?\});</script>", html, re.DOTALL)
    assert match, html[:500]
    return json.loads(match.group(1))


@pytest.mark.slow  # a real server in a process of its own: Gradio takes seconds to start (30 s beside a training)
def test_the_demo_with_a_password_refuses_every_request_without_it(tmp_path):
    """``image-transformer demo --auth USER:PASS`` on loopback, a real server on a free port: without the password the
    page is only a login form and the API and the file route answer 401; with it, the page, the API and the file
    are served (so the refusals are the password's doing, not a wrong address)."""
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    import httpx

    generator().save_pretrained(tmp_path / "m")
    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp_path / "gradio"), GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "-m", "image_transformer", "demo", "--model", str(tmp_path / "m"),
                               "--port", str(port), "--auth", "ann:s3cret", "--threads", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                httpx.get(url + "/config", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the demo did not start serving"
                time.sleep(0.5)

        with httpx.Client(base_url=url, timeout=60) as ann:
            assert ann.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
            assert ann.post("/login", data={"username": "ann", "password": "s3cret"}).status_code == 200
            page = ann.get("/")
            assert page.status_code == 200 and page_config(page.text).get("components")  # the app itself
            assert ann.get("/gradio_api/info").status_code == 200
            upload = ann.post("/gradio_api/upload", files={"files": ("note.txt", b"for ann only")})
            assert upload.status_code == 200, upload.text
            stored = upload.json()[0]
            assert ann.get(f"/gradio_api/file={stored}").content == b"for ann only"

        with httpx.Client(base_url=url, timeout=60) as stranger:
            page = stranger.get("/")
            login = page_config(page.text)  # the login form: no component, no event of the app
            assert login["auth_required"] is True and login["components"] == [] and login["dependencies"] == []
            for method, path in (("GET", "/config"), ("GET", "/gradio_api/info"),
                                 ("POST", "/gradio_api/call/likelihood"), ("POST", "/gradio_api/run/likelihood"),
                                 ("POST", "/gradio_api/queue/join"), ("POST", "/gradio_api/upload"),
                                 ("GET", f"/gradio_api/file={stored}")):
                answer = stranger.request(method, path, json={"data": [str(tmp_path / "m"), None, None, False]}
                                          if method == "POST" else None)
                assert answer.status_code == 401, (method, path, answer.status_code, answer.text[:200])
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_work_folder_stays_bounded_while_the_page_runs(tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    from image_transformer.demo import page

    monkeypatch.setattr(page, "KEPT_DOWNLOADS", 3)
    app = page.DemoApp([], tmp_path / "work")
    made = [app.new_download_folder() for _ in range(5)]
    assert len(list((tmp_path / "work").iterdir())) == 5  # young files stay: a browser may be fetching them
    monkeypatch.setattr(page, "DOWNLOAD_SECONDS", -1)
    made.append(app.new_download_folder())
    assert sorted(p for p in (tmp_path / "work").iterdir()) == sorted(made[-3:])


@pytest.mark.slow
def test_sixteen_clients_at_once_get_results_or_a_clear_refusal_and_leave_nothing_behind():
    pytest.importorskip("gradio_client", reason="the demo extra is not installed: pip install -e '.[demo]'")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from demo_load import run_load

    r = run_load(clients=16, seconds=5)
    assert r["errors"] == 0, r["errors_seen"]
    assert r["requests"] == r["results"] + r["refusals"] and r["results"] > 0
    assert r["workdir_removed"]
    assert r["memory"]["peak"] < r["memory"]["start"] + 1024  # MiB: no growth without bound in 5 s of load


def test_a_request_of_many_large_images_is_refused_before_any_is_decoded(tmp_path, monkeypatch):
    from image_transformer.demo import jobs

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(paths[-1])
    assert jobs.request_pixels(paths) == 30000
    monkeypatch.setattr(jobs, "MAX_REQUEST_PIXELS", 25000)
    with pytest.raises(ValueError, match="more than 25,000 pixels together"):
        jobs.request_pixels(paths)
