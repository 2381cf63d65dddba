"""The demo's page: the app every tab is built in (models, pickers, Cancel, downloads); the tabs themselves are
in :mod:`.tabs`, the work behind them in :mod:`.jobs`, and :mod:`.server` serves the page.

Gradio is an optional extra (``pip install -e ".[demo]"``), imported by :func:`gradio` only when an app is built, so
the package and the command line start without it. Every tab lists the loaded models that can do its job; a tab with
none says so and what to load. Long work runs in Gradio's queue, so one tab's sampling does not hold up another tab;
sampling runs in a thread of its own and stops at the next generation step when Cancel is pressed.
"""

# No ``from __future__ import annotations`` here: Gradio reads the type hints of the functions it calls (a parameter
# annotated ``gr.Request`` receives the request), and it resolves them only when they are objects, not text.
import contextlib
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PIL import Image
from torch import Tensor

from ..files.checkpoint import CheckpointError
from ..files.pretrained import PretrainedModel
from ..nn.model import StepHook
from .jobs import Cancelled, DemoModel, cannot, check_job


def gradio() -> Any:
    """The ``gradio`` module; a ValueError saying how to install it when it is not there. (The page is built with
    its usage statistics off, and :func:`launch` turns them off for the process it serves from.)"""
    try:
        import gradio as gr  # optional: pip install -e ".[demo]"
    except ImportError:
        raise ValueError('the web demo needs Gradio, an optional dependency: pip install -e ".[demo]" '
                         '(or pip install gradio)') from None
    return gr


# ----- the web page -------------------------------------------------------------------------------------------
class Stops:
    """The stop flags of the work under way, by browser session and tab: Cancel sets those of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, set[threading.Event]] = {}

    def start(self, key: str) -> threading.Event:
        flag = threading.Event()
        with self._lock:
            self._flags.setdefault(key, set()).add(flag)
        return flag

    def finish(self, key: str, flag: threading.Event) -> None:
        with self._lock:
            self._flags.get(key, set()).discard(flag)

    def stop(self, key: str) -> int:
        """Set the flags of ``key``'s work; how many were set."""
        with self._lock:
            flags = list(self._flags.get(key, ()))
        for flag in flags:
            flag.set()
        return len(flags)


def step_reporter(report: Callable[[float, str], None], what: str, stop: threading.Event | None = None,
                  every: float = 0.2) -> StepHook:
    """An ``on_step`` hook that reports the fraction done of each sampling run (at most every ``every`` seconds)
    and stops it (raising :class:`Cancelled`) once ``stop`` is set."""
    last = [0.0]

    def hook(values: Tensor, t: int) -> None:
        if stop is not None and stop.is_set():
            raise Cancelled
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            total = values.shape[1]
            report(t / total, f"{what}: step {t:,} of {total:,}")

    return hook


FAILURES = (ValueError, CheckpointError, Cancelled)  # what a tab shows as a message (DataError, CodecError: ValueError)


ABSOLUTE_PATH = re.compile(r"""(?:/[^/\s:,;()'"]+)+/([^/\s:,;()'"]+)""")  # an absolute path; group 1 its last part


def failure(e: BaseException) -> str:
    """What a tab shows for an error: its message, with every path cut to its last part (a page may be served to
    others, who need not learn the server's folders)."""
    if isinstance(e, Cancelled):
        return "Cancelled."
    return "**Cannot do that:** " + ABSOLUTE_PATH.sub(r"\1", str(e))


def progress_bar(fraction: float, width: int = 24) -> str:
    """A bar of text: ``width`` blocks, the first ``fraction`` of them full."""
    full = max(0, min(width, round(fraction * width)))
    return "\u2588" * full + "\u2591" * (width - full)


def to_pil(image: Tensor) -> Image.Image:
    array = image.cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def class_choices(model: PretrainedModel, every_class: bool) -> list[tuple[str, int]]:
    k = getattr(model.config, "num_classes", 0)
    if not k:
        return []
    first = [("one row per class", -1)] if every_class else []
    return first + [(f"class {i}", i) for i in range(k)]


KEPT_DOWNLOADS = 32  # compressed files kept for download at a time ...
DOWNLOAD_SECONDS = 120  # ... and any younger than this, which a browser may still be fetching


class Frame:
    """A tab being built: its model picker, its two columns, and the buttons and status line every tab has."""

    def __init__(self, app: "DemoApp", tab: str, names: list[str], picker: Any, controls: Any, outputs: Any):
        self.app, self.tab, self.names, self.picker = app, tab, names, picker
        self.controls, self.outputs = controls, outputs

    def buttons(self, label: str, cancel: bool = True) -> tuple[Any, Any]:
        """The tab's Run button (and Cancel, for work that steps) at the bottom of the controls: (run, cancel)."""
        gr = self.app.gr
        with self.controls, gr.Row():
            run = gr.Button(label, variant="primary", elem_id=f"{self.tab}-run")
            stop = gr.Button("Cancel", variant="stop", elem_id=f"{self.tab}-cancel") if cancel else None
        return run, stop

    def status(self) -> Any:
        """The tab's status line (results, progress and errors), in the outputs column."""
        with self.outputs:
            return self.app.gr.Markdown(elem_id=f"{self.tab}-status")

    def cancels(self, cancel: Any, status: Any) -> None:
        """Wire Cancel to stop this tab's work for the session that pressed it."""
        cancel.click(self.app.canceller(self.tab), None, status, queue=False, api_name=False)


class DemoApp:
    """The Gradio page over ``models``: one tab per job, built by :meth:`build`. ``workdir`` holds the files it
    hands to the browser (compressed files, held-out images)."""

    def __init__(self, models: Sequence[DemoModel], workdir: str | Path | None = None):
        self.gr = gradio()
        self.models = {m.name: m for m in models}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="image-transformer-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stops = Stops()

    # ----- helpers -----
    def able(self, job: str) -> list[str]:
        return [name for name, m in self.models.items() if cannot(m.model, job) is None]

    def pick(self, name: str | None, job: str) -> PretrainedModel:
        if not name or name not in self.models:
            raise ValueError("no model chosen: pick one above")
        model = self.models[name].model
        check_job(model, job, name)
        return model

    def none_here(self, job: str, what: str) -> None:
        """The notice of a tab that no loaded model can serve."""
        if not self.models:
            text = ("**No model is loaded.** Start the demo with one: `image-transformer demo --model RUN_FOLDER` (a "
                    "run of `image-transformer train`, a checkpoint, a model folder, a shipped model's name or "
                    "`hf-hub:USER/NAME`).")
        else:
            reasons = "\n".join(f"- {cannot(m.model, job, f'`{name}`')}" for name, m in self.models.items())
            text = f"**No loaded model can {what}.**\n\n{reasons}"
        self.gr.Markdown(text, elem_classes="notice")

    def model_picker(self, names: list[str], tab: str) -> Any:
        return self.gr.Dropdown(names, value=names[0], label="model", elem_id=f"{tab}-model")

    def class_picker(self, name: str, every_class: bool = False) -> Any:
        model = self.models[name].model
        choices = class_choices(model, every_class)
        return self.gr.Dropdown(choices, value=choices[0][1] if choices else None, label="class",
                                visible=bool(choices))

    def class_update(self, name: str, every_class: bool = False) -> Any:
        choices = class_choices(self.models[name].model, every_class) if name in self.models else []
        return self.gr.update(choices=choices, value=choices[0][1] if choices else None, visible=bool(choices))

    def upload(self, label: str, elem_id: str) -> Any:
        # type "pil" with image_mode None: the file's own mode (grey stays grey); PNG both ways, never lossy WebP
        return self.gr.Image(type="pil", image_mode=None, format="png", label=label, sources=["upload", "clipboard"],
                             elem_classes=["pixels", "preview"], height=260, elem_id=elem_id)

    def output_image(self, label: str, elem_id: str) -> Any:
        return self.gr.Image(type="numpy", format="png", label=label, interactive=False, elem_classes="pixels",
                             buttons=["download"], elem_id=elem_id)

    def held_out_row(self, picker: Any, target: Any, tab: str) -> None:
        """A number and a button that put the model's held-out image of that number into ``target``."""
        gr = self.gr
        with gr.Row():
            index = gr.Number(0, precision=0, minimum=0, label="held-out image #", scale=1, min_width=100,
                              elem_id=f"{tab}-held-index")
            button = gr.Button("Use a held-out image", scale=2, size="sm", elem_id=f"{tab}-held-out")
        status = gr.Markdown(elem_id=f"{tab}-input-status")

        def load(name: str, i: float) -> tuple[Any, str]:
            try:
                images, _, where = self.models[name].held_out()
            except (FAILURES + (KeyError,)) as e:
                return gr.skip(), failure(e)
            k = int(i or 0) % len(images)
            return to_pil(images[k]), f"Held-out image {k} of {len(images)}, from {where}."

        button.click(load, [picker, index], [target, status], api_name=False)

    def new_download_folder(self) -> Path:
        """A fresh folder in the work folder for one file to download; beyond the newest :data:`KEPT_DOWNLOADS`,
        those older than :data:`DOWNLOAD_SECONDS` are removed, so a long-running page does not fill the disk and no
        file goes while it may still be downloading."""
        kept = sorted(p for p in self.workdir.iterdir() if p.is_dir())  # named in the order they were made
        now = time.time()
        for old in kept[: max(0, len(kept) - KEPT_DOWNLOADS + 1)]:
            if now - old.stat().st_mtime > DOWNLOAD_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.workdir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    def key(self, request: Any, tab: str) -> str:
        return f"{getattr(request, 'session_hash', None)}/{tab}"

    def canceller(self, tab: str) -> Callable[..., str]:
        """The function of a tab's Cancel button: it sets the stop flag of that tab's work for this browser session,
        which ends the sampler at its next step; the work's own last message then says where it stopped. (Not
        Gradio's ``cancels``: that drops the event's last updates, and cannot stop a thread that is computing.)"""
        gr = self.gr

        def cancel(request: gr.Request) -> str:
            return "Stopping at the next step..." if self.stops.stop(self.key(request, tab)) else "Nothing to cancel."

        return cancel

    @contextlib.contextmanager
    def frame(self, tab: str, job: str, intro: str, what: str) -> Iterator["Frame | None"]:
        """The skeleton every tab is built in: its intro; when no loaded model can do ``job``, a notice saying why
        (and None); else two columns, the model picker at the top of the left (controls) one."""
        gr, names = self.gr, self.able(job)
        gr.Markdown(intro)
        if not names:
            self.none_here(job, what)
            yield None
            return
        with gr.Row():
            controls, outputs = gr.Column(scale=1), gr.Column(scale=2)
        with controls:
            picker = self.model_picker(names, tab)
        yield Frame(self, tab, names, picker, controls, outputs)

    @contextlib.contextmanager
    def stoppable(self, tab: str, request: Any) -> Iterator[threading.Event]:
        """The stop flag of this tab's work for this browser session, set by its Cancel button, for the block."""
        key = self.key(request, tab)
        stop = self.stops.start(key)
        try:
            yield stop
        finally:
            self.stops.finish(key, stop)
