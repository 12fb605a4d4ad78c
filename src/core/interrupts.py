"""Ctrl-C and a scheduler's SIGTERM end a run as KeyboardInterrupt, so `finally` blocks clean up; some library
calls must not be cut in the middle, or that cleanup hangs."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def raise_interrupt(signum, frame):
    """SIGTERM handler: a scheduler's kill ends a run like Ctrl-C."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends, then hand them to the handlers that were in place.

    For library code that a KeyboardInterrupt can leave with a lock half taken: TensorBoard's event writer cut
    inside its queue kills its worker thread, and the close() in the interrupt's cleanup then waits forever (a
    killed train.py hung instead of exiting). Only the main thread receives signals, so elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda s, frame: caught.append(s)) for signum in INTERRUPTS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(caught):  # each once, in arrival order
            signal.raise_signal(signum)
