"""The local web demo: ``image-transformer demo`` serves five tabs (Sample, Complete, Upscale, Compress, Likelihood)
over the models it is given, on 127.0.0.1, with no network.

Four modules: :mod:`.jobs`, the functions behind the tabs (plain Python over the task layer, tested without a
browser), :mod:`.page`, the app the tabs are built in, :mod:`.tabs`, the Gradio tabs and their page, and
:mod:`.server`, which serves it.
"""

from .jobs import (
    CSS,
    DISPLAY_PIXELS,
    GREY,
    TEMPERATURES,
    CompressResult,
    DemoModel,
    Snapshot,
    UpscaleResult,
    cannot,
    complete,
    compress,
    describe,
    display,
    drawing_image,
    held_out_images,
    likelihood,
    load_models,
    prepare,
    sample_stream,
    size_table,
    upscale,
    upscale_input,
)
from .page import Cancelled, Stops, gradio, step_reporter
from .server import build_app, launch

__all__ = ["DemoModel", "load_models", "cannot", "prepare", "held_out_images", "sample_stream", "Snapshot",
           "complete", "upscale", "UpscaleResult", "compress", "CompressResult", "likelihood", "build_app", "launch",
           "gradio", "TEMPERATURES", "GREY", "CSS", "Cancelled", "Stops", "step_reporter", "describe", "display",
           "drawing_image", "size_table", "upscale_input", "DISPLAY_PIXELS"]
