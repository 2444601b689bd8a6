"""Ctrl-C, SIGTERM and SIGHUP during a comparison, turned into `Interrupted`."""

import contextlib
import signal
import threading


class Interrupted(KeyboardInterrupt):
    """A comparison stopped by Ctrl-C, SIGTERM or SIGHUP, after saving what had finished.

    Attributes:
        signal_name: "SIGINT", "SIGTERM" or "SIGHUP".
        folder: where results.json and report.md were written.
    """

    def __init__(self, signal_name, folder=None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.folder = folder


_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextlib.contextmanager
def stop_on_signals():
    """Turns Ctrl-C, SIGTERM and SIGHUP into `Interrupted` for a block, in the main thread.

    Elsewhere (a worker thread) signals cannot be caught and Ctrl-C stays a KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    numbers = [getattr(signal, name) for name in _STOP_SIGNALS if hasattr(signal, name)]
    previous = {number: signal.signal(number, stop) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
