"""A run folder has one writer (a lock), and SIGTERM / SIGINT stop a run cleanly after its current step."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from ..files.checkpoint import naming

LOCK_NAME = "train.lock"


class RunLocked(ValueError):
    """Another process is training in this run directory."""


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on a run directory for the life of the block: one writer per run.

    ``flock`` on ``FOLDER/train.lock``, whose text names the holder. The kernel drops the lock when its
    process ends in any way, so a lock file that can be locked was left by a process that has ended (killed,
    or its machine lost): it is taken over with a message. A second writer fails at once, naming the holder.
    The file is removed on release (and the folder, if this made it and it is still empty).
    """
    path = Path(folder) / LOCK_NAME
    created = not path.parent.exists()
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise RunLocked(f"{path.parent}: another training is writing to this run ({holder}; lock "
                                f"{path}): wait for it to end or stop it, or use another --out") from None
            try:  # the last holder may have removed the file between our open and our lock: lock the new one
                if os.path.samestat(os.fstat(f.fileno()), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
            f.close()
    try:
        f.seek(0)
        previous = f.read().strip()
        if previous:
            print(f"warning: {path}: taking over the stale lock of {previous}, which has ended", file=sys.stderr)
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield path
    finally:
        path.unlink(missing_ok=True)
        f.close()
        if created:  # a command refused before it wrote anything leaves no empty run folder behind
            with contextlib.suppress(OSError):
                path.parent.rmdir()


class TrainingStopped(Exception):
    """Training stopped early on SIGTERM or SIGINT, after writing a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopOnSignal:
    """While active, SIGTERM and SIGINT set ``signum`` so the training loop can stop after its current step;
    a second signal exits at once (SIGINT as KeyboardInterrupt, SIGTERM by its default action).

    Handlers are installed only from the main thread and the previous ones come back on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, verbose: bool = True):
        self.verbose = verbose
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            if self.verbose:
                print(f"\n{name}: finishing this step and writing a checkpoint, then stopping "
                      f"(send it again to exit at once)", file=sys.stderr, flush=True)
            return
        if self.verbose:
            print(f"\n{name} again: exiting at once, without a checkpoint", file=sys.stderr, flush=True)
        self.__exit__()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
