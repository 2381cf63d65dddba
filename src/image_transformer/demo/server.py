"""The demo's server: the page (:mod:`.page`) queued, served on this machine (or, with a password, to the network),
and its work folder removed when it stops."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .jobs import CSS, DemoModel, load_models
from .page import DemoApp, gradio
from .tabs import build_page

QUEUE_SIZE = 16  # requests waiting at most; the next one is told the queue is full


def build_app(models: Sequence[DemoModel], workdir: str | Path | None = None) -> Any:
    """The demo page (a ``gradio.Blocks``, queued: each event has two workers, so one tab's long work leaves the
    others free, and at most :data:`QUEUE_SIZE` requests wait), over ``models``."""
    app = build_page(DemoApp(models, workdir))
    return app.queue(default_concurrency_limit=2, max_size=QUEUE_SIZE)


LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD = "16mb"  # per uploaded file


def launch(sources: Sequence[str], host: str = "127.0.0.1", port: int | None = None, *, block: bool = True,
           quiet: bool = False, auth: tuple[str, str] | None = None) -> Any:
    """Load the models named by ``sources`` and serve the demo at http://HOST:PORT (port None: the first free one
    from 7860). With ``block`` False it returns the running app (``app.close()`` stops it). The serving process
    sends no usage statistics (GRADIO_ANALYTICS_ENABLED=False unless the environment says otherwise).

    Off the loopback address (``host`` 0.0.0.0, say) the page is open to the network: it is refused without
    ``auth`` (user, password), errors show no tracebacks, and a warning says so. Uploads are limited to
    :data:`MAX_UPLOAD` a file; the work folder (compressed files to download) is removed when the server stops."""
    open_to_network = host not in LOOPBACK
    if open_to_network and auth is None:
        raise ValueError(f"host {host!r} opens the demo to the network: give a user name and password "
                         f"(--auth USER:PASS), or serve on 127.0.0.1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    gradio()  # the missing-Gradio message before the models load
    models = load_models(sources)
    workdir = tempfile.mkdtemp(prefix="image-transformer-demo-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    app = build_app(models, workdir)
    if open_to_network:
        print(f"warning: the demo is served to the network on {host}: anyone who can reach this machine and has the "
              f"password can run the models on it", file=sys.stderr)
    try:
        app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=not open_to_network,
                   quiet=quiet, prevent_thread_lock=not block, ssr_mode=False, mcp_server=False,
                   allowed_paths=[workdir], css=CSS, auth=auth, max_file_size=MAX_UPLOAD)
    finally:
        if block:
            shutil.rmtree(workdir, ignore_errors=True)
    close = app.close

    def close_and_clean(*args: Any, **kwargs: Any) -> Any:  # a server that returned at once: cleaned when closed
        try:
            return close(*args, **kwargs)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    app.close = close_and_clean
    app.workdir = workdir
    return app
