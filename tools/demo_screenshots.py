"""Drive the web demo in a headless Chromium: each tab once, a screenshot of each, and the seconds each took.

    python tools/demo_screenshots.py --model runs/mnist runs/celeba-sr --digit digit.png --out docs/demo

It serves the demo on a free local port (in this process), opens the page in the system's Chromium through
Playwright (``pip install -e ".[demo,browser]"``; Chromium from the system's packages, e.g.
``apt-get install chromium``: Playwright's own browser download is not needed), samples, completes the digit,
upscales a held-out face (or ``--face``), compresses the digit and scores it, and writes ``sample.png``,
``complete.png``, ``upscale.png``, ``compress.png`` and ``likelihood.png`` into ``--out``. The browser test
(tests/test_demo_browser.py) runs the same steps on tiny models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

# the places Debian, Ubuntu and Fedora put Chromium (the first is Debian's binary behind its /usr/bin wrapper)
CHROMIUM = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser",
            "/usr/lib64/chromium-browser/chromium-browser", "/usr/bin/google-chrome")
TIMEOUT_MS = 60_000


def find_chromium() -> str | None:
    """The system's Chromium: $CHROMIUM_PATH, a usual place, or chromium on the PATH; None when there is none."""
    for candidate in (os.environ.get("CHROMIUM_PATH"), *CHROMIUM, shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(models: list, workdir: Path) -> tuple[Any, str]:
    """The demo over ``models`` (demo.DemoModel) served on a free port of 127.0.0.1: (app, url)."""
    from image_transformer import demo

    app = demo.build_app(models, workdir)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
               share=False, mcp_server=False, allowed_paths=[str(workdir)], css=demo.CSS)
    return app, f"http://127.0.0.1:{port}/"


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def set_number(page: Any, elem_id: str, value: float) -> None:
    """Type ``value`` into a slider's (or number's) box and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def wait_status(page: Any, elem_id: str, text: str, timeout_ms: int | None = None, refused: bool = True) -> str:
    """Wait until the text shown in ``elem_id`` holds ``text``; with ``refused``, fail as soon as it says that
    something could not be done."""
    stop = "Cannot do that" if refused else text
    # the text that matched, read in the same moment: the status can move on before a second read (a Cancel's
    # "Stopping..." is soon replaced by the sampler's "Cancelled after ...")
    found = page.wait_for_function(
        "([id, text, stop]) => { const t = document.getElementById(id)?.innerText || '';"
        " return (t.includes(text) || t.includes(stop)) ? t : null; }",
        arg=[elem_id, text, stop], timeout=timeout_ms or TIMEOUT_MS).json_value()
    if text not in found:
        raise AssertionError(f"{elem_id}: {found}")
    return found


def image_url(page: Any, elem_id: str) -> str:
    """The address of the image shown in the component ``elem_id``."""
    locator = page.locator(f"#{elem_id} img").first
    locator.wait_for(state="attached", timeout=TIMEOUT_MS)
    locator.evaluate("e => e.scrollIntoView({block: 'center'})")  # the page's images load lazily
    page.wait_for_function("(id) => { const i = document.querySelector('#' + id + ' img');"
                           " return i && i.complete && i.naturalWidth > 0; }", arg=elem_id, timeout=TIMEOUT_MS)
    return locator.get_attribute("src")


def fetch(page: Any, url: str) -> bytes:
    return page.request.get(url).body()


def upload(page: Any, elem_id: str, files: Path | list[Path]) -> None:
    page.locator(f"#{elem_id} input[type=file]").set_input_files(files)


def draw_seven(page: Any, elem_id: str) -> None:
    """Draw a 7 on the sketch pad ``elem_id`` with the mouse: a bar, then a stroke down and to the left."""
    box = page.locator(f"#{elem_id} canvas").first.bounding_box()

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    for start, end in (((0.3, 0.2), (0.62, 0.2)), ((0.62, 0.2), (0.45, 0.85))):
        page.mouse.move(*at(*start))
        page.mouse.down()
        page.mouse.move(*at(*end), steps=12)
        page.mouse.up()


def shoot(page: Any, folder: Path | None, name: str) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def drive(page: Any, url: str, digit: Path, face: Path | None, shots: Path | None, num: int = 2,
          rows: int | None = None, progress_shot: bool = False,
          compress: list[Path] | None = None) -> dict[str, dict[str, Any]]:
    """Every tab once: sample ``num`` images, complete ``digit`` keeping its top ``rows`` rows (and a 7 drawn on the
    sketch pad), upscale ``face`` (None: the first held-out face), compress ``compress`` (None: ``digit``)
    and score ``digit``. Returns per tab
    the seconds from the click
    to the result, the status text, and the addresses of what was shown or offered for download. With
    ``progress_shot``, also a screenshot of the grid half drawn (``sample-progress.png``)."""
    try:
        return _drive(page, url, digit, face, shots, num, rows, progress_shot, compress or [digit])
    except Exception:  # what the page showed when a step failed, to see why
        shoot(page, shots, "failure")
        if shots is not None:
            (shots / "failure.html").write_text(page.content())
        raise


def _drive(page: Any, url: str, digit: Path, face: Path | None, shots: Path | None, num: int,
           rows: int | None, progress_shot: bool, compress: list[Path]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    page.set_default_timeout(TIMEOUT_MS)

    def timed(tab: str, button: str, status: str, text: str, meanwhile: Any = None) -> dict[str, Any]:
        started = time.monotonic()
        page.locator(f"#{button}").click()
        if meanwhile is not None:
            meanwhile()
        found = wait_status(page, status, text)
        results[tab] = {"seconds": round(time.monotonic() - started, 2), "status": found}
        return results[tab]

    page.goto(url)
    page.get_by_role("tab", name="Sample", exact=True).wait_for(timeout=TIMEOUT_MS)
    set_number(page, "sample-num", num)
    def half_drawn() -> None:
        page.wait_for_function("() => (document.getElementById('sample-status')?.innerText || '')"
                               ".match(/[12]\\d of \\d+ rows complete/)",  # 10 rows or more
                               timeout=TIMEOUT_MS)
        image_url(page, "sample-out")
        shoot(page, shots, "sample-progress")

    result = timed("sample", "sample-run", "sample-status", "images in", half_drawn if progress_shot else None)
    result["image"] = image_url(page, "sample-out")
    shoot(page, shots, "sample")

    open_tab(page, "Complete")
    upload(page, "complete-image", digit)
    image_url(page, "complete-image")
    if rows is not None:
        set_number(page, "complete-rows", rows)
    result = timed("complete", "complete-run", "complete-status", "completions in")
    result["image"] = image_url(page, "complete-out")
    shoot(page, shots, "complete")
    page.get_by_role("tab", name="Draw", exact=True).click()  # the same from a drawing on the sketch pad
    page.locator("#complete-pad canvas").first.wait_for()
    draw_seven(page, "complete-pad")
    result = timed("complete-drawing", "complete-run", "complete-status", "resized from")
    result["image"] = image_url(page, "complete-out")
    shoot(page, shots, "complete-drawing")

    open_tab(page, "Upscale")
    if page.locator("#upscale-run").count():  # a page with no super-resolution model says so instead
        if face is None:
            page.locator("#upscale-held-out").click()
            wait_status(page, "upscale-input-status", "Held-out image")
        else:
            upload(page, "upscale-image", face)
        image_url(page, "upscale-image")
        result = timed("upscale", "upscale-run", "upscale-status", "samples in")
        image_url(page, "upscale-out")
        result["images"] = page.locator("#upscale-out img").count()
        result["gallery"] = page.locator("#upscale-out img").evaluate_all("images => images.map(i => i.src)")
        shoot(page, shots, "upscale")

    open_tab(page, "Compress")
    upload(page, "compress-files", compress)
    for path in compress:  # uploaded: each file is listed (its extension apart)
        wait_status(page, "compress-files", path.stem)
    result = timed("compress", "compress-run", "compress-status", "identical")
    result["image"] = image_url(page, "compress-out")
    link = page.locator("#compress-download a").first
    link.wait_for(timeout=TIMEOUT_MS)
    result["download"] = link.get_attribute("href")
    shoot(page, shots, "compress")

    open_tab(page, "Likelihood")
    upload(page, "likelihood-image", digit)
    image_url(page, "likelihood-image")
    result = timed("likelihood", "likelihood-run", "likelihood-status", "bits/dim")
    result["heat"] = image_url(page, "likelihood-heat")
    shoot(page, shots, "likelihood")
    return results


def main() -> None:
    global TIMEOUT_MS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", required=True, help="models to serve (as `image-transformer demo` takes)")
    p.add_argument("--digit", type=Path, required=True, help="a PNG for Complete, Compress and Likelihood")
    p.add_argument("--face", type=Path, help="a PNG for Upscale (default: the first held-out face)")
    p.add_argument("--compress", type=Path, nargs="+", help="PNGs for Compress (default: --digit)")
    p.add_argument("--rows", type=int, help="top rows Complete keeps (default: the page's, half the image)")
    p.add_argument("--num", type=int, default=16, help="images to sample")
    p.add_argument("--out", type=Path, default=Path("docs/demo"), help="folder for the screenshots")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--width", type=int, default=1280, help="browser window width")
    p.add_argument("--timeout", type=float, default=TIMEOUT_MS / 1000,
                   help="seconds to wait for any one step (raise it on a machine busy with other work)")
    args = p.parse_args()
    TIMEOUT_MS = int(args.timeout * 1000)

    import tempfile

    import torch
    from playwright.sync_api import sync_playwright

    from image_transformer import demo

    if args.threads:
        torch.set_num_threads(args.threads)
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found: apt-get install chromium (or set CHROMIUM_PATH)")
    app, url = serve(demo.load_models(args.model), Path(tempfile.mkdtemp(prefix="image-transformer-demo-")))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            results = drive(page, url, args.digit, args.face, args.out, num=args.num, rows=args.rows,
                            progress_shot=True, compress=args.compress)
            browser.close()
    finally:
        app.close()
    print(json.dumps({tab: {k: v for k, v in r.items() if k in ("seconds", "status", "images")}
                      for tab, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
