"""Load on the web demo: concurrent clients sampling and compressing against one server on 127.0.0.1.

    python benchmarks/demo_load.py                             # 16 clients for 30 s, over a tiny model
    python benchmarks/demo_load.py --clients 16 --seconds 60 --model mnist

Each client (``gradio_client``, as any program calling the page's API would) alternates a Sample request and a
Compress request until the time is up. Every request must end with a result or a clear refusal (the queue is
full: try again); anything else is an error. Printed: requests, results, refusals, errors, the seconds a request
took (median and max), this process's resident memory (the server runs in it) at the start, at its peak and at the
end, the most downloads the work folder held, and whether the folder was gone once the server closed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def rss_mib() -> float:
    """This process's resident memory (Linux), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_model(folder: Path) -> str:
    from image_transformer import ImageTransformer, ImageTransformerConfig

    torch.manual_seed(0)
    model = ImageTransformer(ImageTransformerConfig(image_size=(6, 6), channels=1, hidden_size=16, num_layers=1,
                                                    num_heads=2, ffn_size=16, query_length=12, memory_length=12))
    model.save_pretrained(folder / "tiny")
    return str(folder / "tiny")


def run_load(clients: int = 16, seconds: float = 30.0, model: str | None = None) -> dict[str, Any]:
    """Serve the demo, load it from ``clients`` threads for ``seconds``, close it; what happened, as a dict."""
    from gradio_client import Client, handle_file

    from image_transformer import demo
    from image_transformer.demo import jobs

    scratch = Path(tempfile.mkdtemp(prefix="demo-load-"))
    source = model or tiny_model(scratch)
    app = demo.launch([source], block=False, quiet=True)
    url, workdir = app.local_url, Path(app.workdir)
    name = next(iter(jobs.load_models([source]))).name
    shape = jobs.load_models([source])[0].model.image_shape
    # one image per client: Gradio caches an output under a hash of its content, and two requests that write the
    # same output at once can cut each other's download short (a race in Gradio's cache, seen under this load)
    images = []
    for k in range(clients):
        array = np.random.default_rng(k).integers(0, 256, shape, dtype=np.uint8)
        images.append(scratch / f"image-{k}.png")
        Image.fromarray(array[..., 0] if shape[-1] == 1 else array).save(images[-1])

    counts = {"requests": 0, "results": 0, "refusals": 0, "errors": 0}
    seconds_per_request: list[float] = []
    errors: list[str] = []
    memory = {"start": rss_mib(), "peak": rss_mib()}
    most_kept = [0]
    lock, done = threading.Lock(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            memory["peak"] = max(memory["peak"], rss_mib())
            if workdir.is_dir():
                most_kept[0] = max(most_kept[0], sum(1 for p in workdir.iterdir() if p.is_dir()))
            time.sleep(0.2)

    def client(k: int) -> None:
        api = Client(url, verbose=False)
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                if i % 2 == 0:
                    api.predict(name, 1.0, 2, k * 1000 + i, None, api_name="/sample")
                else:
                    api.predict(name, [handle_file(str(images[k]))], None, False, api_name="/compress")
                outcome = "results"
            except Exception as e:  # noqa: BLE001 - sorted below: a refusal or an error
                text = str(e).lower()
                outcome = "refusals" if "queue" in text and ("full" in text or "busy" in text) else "errors"
                if outcome == "errors":
                    with lock:
                        errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            with lock:
                counts["requests"] += 1
                counts[outcome] += 1
                seconds_per_request.append(time.monotonic() - start)
            i += 1

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    memory["end"] = rss_mib()
    app.close()
    return dict(counts, clients=clients, seconds=seconds, errors_seen=errors[:5],
                median_s=statistics.median(seconds_per_request) if seconds_per_request else float("nan"),
                max_s=max(seconds_per_request, default=float("nan")), memory=memory, most_kept=most_kept[0],
                workdir_removed=not workdir.exists())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--model", help="a model to serve (default: a tiny one made here)")
    args = p.parse_args()
    r = run_load(args.clients, args.seconds, args.model)
    m = r["memory"]
    print(f"{r['clients']} clients for {r['seconds']:.0f} s: {r['requests']} requests, {r['results']} results, "
          f"{r['refusals']} refusals (queue full), {r['errors']} errors")
    print(f"seconds a request took: median {r['median_s']:.2f}, max {r['max_s']:.2f}")
    print(f"resident memory (MiB): start {m['start']:.0f}, peak {m['peak']:.0f}, end {m['end']:.0f}")
    print(f"downloads kept at most: {r['most_kept']}; work folder removed on close: {r['workdir_removed']}")
    for e in r["errors_seen"]:
        print("error:", e)


if __name__ == "__main__":
    main()
