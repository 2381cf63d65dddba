"""The demo's five tabs (Sample, Complete, Upscale, Compress, Likelihood), each built in the app's frame
(:class:`.page.DemoApp`) with its work in a function of its own, and :func:`build_page`, the page that holds them.
"""

# No ``from __future__ import annotations`` here: Gradio reads the type hints of the functions it calls (a parameter
# annotated ``gr.Request`` receives the request), and it resolves them only when they are objects, not text.
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..files.folders import ModelFolderError
from ..files.image_files import LOSSLESS_FORMATS, lossless_formats
from ..files.plots import heat_map
from ..tasks import labels_for
from .jobs import (
    DISPLAY_PIXELS,
    MAX_FILES,
    TEMPERATURES,
    complete,
    compress,
    display,
    drawing_image,
    likelihood,
    placement,
    prepare,
    request_pixels,
    sample_stream,
    size_table,
    upscale,
    upscale_input,
)
from .page import ABSOLUTE_PATH, FAILURES, DemoApp, failure, progress_bar, step_reporter


def _notes(notes: list[str]) -> str:
    return f" (input: {'; '.join(notes)})" if notes else ""


def sample_tab(app: DemoApp) -> None:
    gr = app.gr
    with app.frame("sample", "sample", "Draw new images, one sub-pixel at a time in the model's generation "
                    "order; the grid fills in as the sampler goes (grey: not drawn yet).", "sample images") as f:
        if f is None:
            return
        with f.controls:
            label = app.class_picker(f.names[0], every_class=True)
            temperature = gr.Slider(0.0, 1.5, 1.0, step=0.05, label="temperature (0: greedy)")
            num = gr.Slider(1, 64, 16, step=1, label="number of images", elem_id="sample-num")
            seed = gr.Number(0, precision=0, label="seed")
        run, cancel = f.buttons("Sample")
        with f.outputs:
            out = app.output_image("samples", "sample-out")
        status = f.status()
    picker = f.picker
    picker.change(lambda n: app.class_update(n, True), picker, label, api_name=False)

    def go(name: str, temperature: float, num: float, seed: float, label: int | None,
           request: gr.Request) -> Iterator[tuple[Any, str]]:
        with app.stoppable("sample", request) as stop:
            yield from _sample(app, name, temperature, num, seed, label, stop)

    # the status line is the progress indicator (a bar, the rows, the seconds): Gradio's own would cover the grid
    run.click(go, [picker, temperature, num, seed, label], [out, status], show_progress="hidden",
              api_name="sample")
    f.cancels(cancel, status)


def _sample(app: DemoApp, name: str, temperature: float, num: float, seed: float, label: int | None,
            stop: threading.Event) -> Iterator[tuple[Any, str]]:
    """The Sample tab's work: the grid as it grows, and a status line."""
    try:
        model = app.pick(name, "sample")
        cls = None if label is None or label < 0 else int(label)
        for snap in sample_stream(model, int(num), float(temperature), int(seed or 0), cls, stop=stop):
            rows = snap.rows_done(model)
            if snap.cancelled:
                text = f"Cancelled after {snap.seconds:.1f} s, at step {snap.done:,} of {snap.total:,}."
            elif snap.finished:
                n = len(snap.images)
                text = (f"**{n} images in {snap.seconds:.1f} s** ({n / snap.seconds:.2f} images/s), "
                        f"temperature {temperature:g}, seed {int(seed or 0)}.")
            else:
                doing = "Stopping at the next step..." if stop.is_set() else "Sampling"  # Cancel pressed
                text = (f"{doing} `{progress_bar(snap.done / snap.total)}` {rows} of "
                        f"{model.image_shape[0]} rows complete (step {snap.done:,} of {snap.total:,}), "
                        f"{snap.seconds:.1f} s.")
            yield display(snap.images, snap.nrow), text
    except FAILURES as e:
        yield None, failure(e)


def complete_tab(app: DemoApp) -> None:
    gr = app.gr
    with app.frame("complete", "complete", "Keep the top rows of an image and let the model draw the rest, "
                    "several times: each row of the result shows the input (unknown part grey), the completions "
                    "and the original.", "complete images") as f:
        if f is None:
            return
        names, picker = f.names, f.picker
        h = app.models[names[0]].model.image_shape[0]
        with f.controls:
            source = gr.State("upload")  # the sub-tab last chosen: what to complete
            with gr.Tabs():
                with gr.Tab("Upload", id="complete-upload") as upload_tab:
                    image = app.upload("image to complete", "complete-image")
                    app.held_out_row(picker, image, "complete")  # here: a held-out image is an upload
                with gr.Tab("Draw", id="complete-draw") as draw_tab:
                    pad = gr.Sketchpad(value={"background": np.zeros((280, 280, 3), np.uint8), "layers": [],
                                              "composite": None},
                                       canvas_size=(280, 280), fixed_canvas=True, type="numpy", image_mode="RGBA",
                                       brush=gr.Brush(default_size=22, colors=["#ffffff", "#808080", "#000000"],
                                                      default_color="#ffffff"),
                                       label="draw (white on black); resized to the model's size",
                                       elem_id="complete-pad")
            rows = gr.Slider(0, h, h // 2, step=1, label="top rows to keep", elem_id="complete-rows")
            label = app.class_picker(names[0])
            num = gr.Slider(1, 16, 4, step=1, label="completions", elem_id="complete-num")
            temperature = gr.Slider(0.0, 1.5, 1.0, step=0.05, label="temperature")
            seed = gr.Number(0, precision=0, label="seed")
            fit = gr.Checkbox(False, label="fit to the model (resize and convert an upload that does not match)")
        run, cancel = f.buttons("Complete")
        with f.outputs:
            out = app.output_image("input · completions · original", "complete-out")
        status = f.status()

    def changed(name: str) -> tuple[Any, Any]:
        mh = app.models[name].model.image_shape[0]
        return app.class_update(name), gr.update(maximum=mh, value=min(mh, mh // 2))

    picker.change(changed, picker, [label, rows], api_name=False)
    upload_tab.select(lambda: "upload", None, source, api_name=False)
    draw_tab.select(lambda: "drawing", None, source, api_name=False)

    def go(name: str, source: str, upload: Any, drawing: Any, rows: float, label: int | None, num: float,
           temperature: float, seed: float, fit: bool, request: gr.Request,
           progress: gr.Progress = gr.Progress()) -> tuple[Any, str]:
        with app.stoppable("complete", request) as stop:
            return _complete(app, name, source, upload, drawing, rows, label, num, temperature, seed, fit,
                                  progress, stop)

    run.click(go, [picker, source, image, pad, rows, label, num, temperature, seed, fit], [out, status],
              api_name="complete")
    f.cancels(cancel, status)


def _complete(app: DemoApp, name: str, source: str, upload: Any, drawing: Any, rows: float, label: int | None,
              num: float, temperature: float, seed: float, fit: bool, progress: Any,
              stop: threading.Event) -> tuple[Any, str]:
    """The Complete tab's work: the grid of completions, and a status line."""
    try:
        model = app.pick(name, "complete")
        if source == "drawing":
            given, fit = drawing_image(drawing), True  # a sketch has the pad's size: always fitted
            if given is None:
                raise ValueError("the sketch pad is empty: draw something, or upload an image")
        else:
            given = upload
        x, notes = prepare(given, model.image_shape, fit)
        start = time.monotonic()
        hook = step_reporter(lambda f, d: progress(f, desc=d), "completing", stop)
        grid = complete(model, x, int(rows), int(num), float(temperature), int(seed or 0), label, hook)
        seconds = time.monotonic() - start
        return (display(grid, nrow=len(grid)),
                f"**{int(num)} completions in {seconds:.1f} s**, the top {int(rows)} rows kept{_notes(notes)}.")
    except FAILURES as e:
        return None, failure(e)


def upscale_tab(app: DemoApp) -> None:
    gr = app.gr
    with app.frame("upscale", "upscale", "Give a face (or pick a held-out one): the model sees its "
                    "low-resolution version and draws the high-resolution image at temperatures "
                    + ", ".join(map(str, TEMPERATURES)) + ".", "upscale") as f:
        if f is None:
            return
        picker = f.picker
        with f.controls:
            image = app.upload("face (low or high resolution)", "upscale-image")
            app.held_out_row(picker, image, "upscale")
            num = gr.Slider(1, 4, 1, step=1, label="samples per temperature", elem_id="upscale-num")
            seed = gr.Number(0, precision=0, label="seed")
            fit = gr.Checkbox(False, label="fit to the model (resize and convert)")
        run, cancel = f.buttons("Upscale")
        with f.outputs:
            gallery = gr.Gallery(label="input and samples", columns=len(TEMPERATURES) + 2, height="auto",
                                 object_fit="contain", elem_classes="pixels", format="png", elem_id="upscale-out")
        status = f.status()

    def go(name: str, upload: Any, num: float, seed: float, fit: bool, request: gr.Request,
           progress: gr.Progress = gr.Progress()) -> tuple[Any, str]:
        with app.stoppable("upscale", request) as stop:
            return _upscale(app, name, upload, num, seed, fit, progress, stop)

    run.click(go, [picker, image, num, seed, fit], [gallery, status], api_name="upscale")
    f.cancels(cancel, status)


def _upscale(app: DemoApp, name: str, upload: Any, num: float, seed: float, fit: bool, progress: Any,
             stop: threading.Event) -> tuple[Any, str]:
    """The Upscale tab's work: the input and the samples at each temperature, and a status line."""
    try:
        model = app.pick(name, "upscale")
        if upload is None:
            raise ValueError("no image: upload a face, or pick a held-out one")
        low, original, notes = upscale_input(model, upload, fit)
        start = time.monotonic()
        hook = step_reporter(lambda f, d: progress(f, desc=d), "upscaling", stop)
        result = upscale(model, low, int(num), int(seed or 0), original=original, on_step=hook)
        seconds = time.monotonic() - start
        pixels = DISPLAY_PIXELS // 2
        ih, iw, _ = model.input_shape
        items = [(display(low, pixels=pixels), f"{ih}x{iw} input")]
        for t, samples in result.samples.items():
            items += [(display(s, pixels=pixels), f"T={t:g}") for s in samples]
        if original is not None:
            items.append((display(original, pixels=pixels), "original"))
        return items, f"**{len(result.samples) * int(num)} samples in {seconds:.1f} s**{_notes(notes)}."
    except FAILURES as e:
        return None, failure(e)


def compress_tab(app: DemoApp) -> None:
    gr = app.gr
    formats = ", ".join(LOSSLESS_FORMATS[f] for f in lossless_formats())
    with app.frame("compress", "compress", "Compress images losslessly with the model: every sub-pixel is "
                    "range-coded with its exact probability. The file is decoded again and compared with the "
                    f"input; its size is set beside {formats}.", "compress images") as f:
        if f is None:
            return
        names, picker = f.names, f.picker
        with f.controls:
            files = gr.File(file_count="multiple", file_types=["image"], label="images to compress",
                            elem_id="compress-files")
            label = app.class_picker(names[0])
            fit = gr.Checkbox(False, label="fit to the model (resize and convert)")
        run, _ = f.buttons("Compress", cancel=False)
        with f.controls:
            download = gr.File(label="compressed file (decompress: image-transformer decompress FILE --model M)",
                               interactive=False, elem_id="compress-download")
        status = f.status()
        with f.outputs:
            out = app.output_image("uploaded (top) and decoded from the file (bottom)", "compress-out")
    picker.change(app.class_update, picker, label, api_name=False)

    def go(name: str, paths: list[str] | None, label: int | None, fit: bool,
           progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str]:
        try:
            model = app.pick(name, "compress")
            if not paths:
                raise ValueError("no images: upload one or more")
            if len(paths) > MAX_FILES:
                raise ValueError(f"{len(paths)} files: compress at most {MAX_FILES} at a time here")
            request_pixels(paths)
            prepared = [prepare(p, model.image_shape, fit) for p in paths]
            images = torch.stack([x for x, _ in prepared])
            labels = labels_for(model, len(images), label)
            names_ = [Path(p).name for p in paths]
            progress(0.1, desc="compressing and decoding")
            result = compress(model, images, labels, names_, sum(Path(p).stat().st_size for p in paths))
            folder = app.new_download_folder()
            path = folder / f"{Path(names_[0]).stem if len(names_) == 1 else 'images'}.itc"
            path.write_bytes(result.stream)
            count = f"all {len(images)} images" if len(images) > 1 else "the image"
            verdict = (f"**Decoded file = uploaded images: identical** ({count}, {result.dims:,} of "
                       f"{result.dims:,} values equal)" if result.identical else
                       "**Decoded file differs from the input**: this should not happen; please report it")
            notes = sorted({n for _, ns in prepared for n in ns})
            size, payload = len(result.stream), result.sizes[1][1]
            text = (f"{verdict}.\n\n**{size:,} bytes**, {result.bits_per_dim(size):.3f} bits/dim: {payload:,} "
                    f"bytes of coded pixels and a {size - payload:,}-byte header (the model's fingerprint, the "
                    f"names: one per file, however many images it holds); the model's own -log2 p: "
                    f"{result.model_bits_per_dim:.3f} bits/dim. Encoded in "
                    f"{result.encode_seconds:.1f} s, decoded in {result.decode_seconds:.1f} s{_notes(notes)}.\n\n"
                    + size_table(result))
            shown = display(torch.cat([images, result.decoded]), nrow=len(images))
            return str(path), shown, text
        except FAILURES as e:
            return None, None, failure(e)

    run.click(go, [picker, files, label, fit], [download, out, status], api_name="compress")


def likelihood_tab(app: DemoApp) -> None:
    gr = app.gr
    with app.frame("likelihood", "likelihood", "How well does the model predict an image? Its bits per "
                    "dimension, and a heat map of the bits of each pixel: bright where the model is surprised.",
                    "score images") as f:
        if f is None:
            return
        names, picker = f.names, f.picker
        with f.controls:
            image = app.upload("image to score", "likelihood-image")
            app.held_out_row(picker, image, "likelihood")
            label = app.class_picker(names[0])
            fit = gr.Checkbox(False, label="fit to the model (resize and convert)")
        run, _ = f.buttons("Score", cancel=False)
        status = f.status()
        with f.outputs, gr.Row():
            seen = app.output_image("the image as the model sees it", "likelihood-seen")
            heat = gr.Image(type="numpy", format="png", label="bits per pixel", interactive=False,
                            buttons=["download", "fullscreen"], elem_id="likelihood-heat")
    picker.change(app.class_update, picker, label, api_name=False)

    def go(name: str, upload: Any, label: int | None, fit: bool) -> tuple[Any, Any, str]:
        try:
            if not name or name not in app.models:
                raise ValueError("no model chosen: pick one above")
            model = app.models[name].model
            x, notes = prepare(upload, model.image_shape, fit)
            start = time.monotonic()
            bpd, bits = likelihood(model, x, label)
            seconds = time.monotonic() - start
            picture = heat_map(bits, "bits (-log2 p, summed over the pixel's channels)",
                               title=f"{bpd:.3f} bits/dim")
            try:
                where = placement(app.models[name].reference(), x, bpd)
            except ModelFolderError as e:  # a damaged reference: the bits stand, and the page says what is wrong
                where = "**The image cannot be placed among held-out ones:** " + ABSOLUTE_PATH.sub(r"\1", str(e))
            text = (f"## {bpd:.3f} bits/dim\n{float(bits.sum()):,.0f} bits in all for {x.numel():,} sub-pixels "
                    f"(least surprising pixel {float(bits.min()):.2f} bits, most {float(bits.max()):.2f}); "
                    f"{seconds:.2f} s{_notes(notes)}.\n\n" + where)
            return display(x), picture, text
        except FAILURES as e:
            return None, None, failure(e)

    run.click(go, [picker, image, label, fit], [seen, heat, status], api_name="likelihood")


TABS = (("Sample", sample_tab), ("Complete", complete_tab), ("Upscale", upscale_tab), ("Compress", compress_tab),
        ("Likelihood", likelihood_tab))


def build_page(app: DemoApp) -> Any:
    """The Gradio page: what is loaded, then one tab per job."""
    gr = app.gr
    with gr.Blocks(title="Image Transformer demo", analytics_enabled=False) as page:
        loaded = "\n".join(f"- {m.describe()}" for m in app.models.values()) or "- none"
        gr.Markdown("# Image Transformer\nLocal self-attention image models with exact likelihoods "
                    "(Parmar et al., 2018). Everything runs on this machine.\n\n"
                    f"<details><summary>Models loaded ({len(app.models)})</summary>\n\n{loaded}\n</details>")
        with gr.Tabs():
            for title, tab in TABS:
                with gr.Tab(title, id=title.lower()):
                    tab(app)
    return page
