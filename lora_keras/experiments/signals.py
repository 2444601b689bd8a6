"""Ctrl-C, SIGTERM and SIGHUP during a comparison, turned into `Interrupted`.

Two promises beyond the obvious one:
- a signal that was ignored when the comparison started stays ignored (`nohup` ignores SIGHUP,
  a shell's background job SIGINT), and
- once the comparison is stopping (saving results.json and drawing report.md), or drawing the
  report of runs that all finished, further signals wait: a second SIGTERM a moment after the
  first does not cut the report short.
"""

import contextlib
import signal
import sys
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


class Stopping:
    """What `stop_on_signals` yields: the signals it caught, and a switch to hold them back.

    Attributes:
        caught: the name of the first signal caught, `None` while none came.
        watched: the signals it handles (those not ignored when the block began).
    """

    def __init__(self, watched):
        self.caught = None
        self.watched = watched
        self._holding = False

    def hold(self):
        """From now on a signal is noted, not raised: what is being written gets finished."""
        self._holding = True

    def __call__(self, signum, frame):
        name = signal.Signals(signum).name
        if self.caught is None and not self._holding:
            self.caught = name
            raise Interrupted(name)
        self.caught = self.caught or name
        # Unless the terminal is gone (SIGHUP): the files get written all the same.
        with contextlib.suppress(OSError, ValueError):
            print(
                f"lora-keras: {name} received while saving the results; stopping as soon as "
                "results.json and report.md are written",
                file=sys.stderr,
                flush=True,
            )


@contextlib.contextmanager
def stop_on_signals():
    """Turns Ctrl-C, SIGTERM and SIGHUP into `Interrupted` for a block, in the main thread.

    The first signal raises `Interrupted`; any signal after it, or after `hold()`, is only
    noted in `caught`, so the block can finish writing. A signal ignored when the block began
    (`nohup`'s SIGHUP) stays ignored. Elsewhere (a worker thread) signals cannot be caught and
    Ctrl-C stays a KeyboardInterrupt.

    Yields:
        A `Stopping`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield Stopping(())
        return
    numbers = [getattr(signal, name) for name in _STOP_SIGNALS if hasattr(signal, name)]
    numbers = [number for number in numbers if signal.getsignal(number) is not signal.SIG_IGN]
    stopping = Stopping(tuple(signal.Signals(number).name for number in numbers))
    previous = {number: signal.signal(number, stopping) for number in numbers}
    try:
        yield stopping
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
