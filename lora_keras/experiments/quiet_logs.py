"""Drops the runtimes' start-up notices from a child's output on screen; the log keeps them.

TensorFlow (imported by KerasHub under every backend) prints, before its log level can take
effect, lines no setting silences: absl's "All log messages before absl::InitializeLog()",
INFO lines on oneDNN and CPU features, "failed call to cuInit" on a machine without a GPU.
Only those known lines go; every other warning and error is shown.
"""

import contextlib
import os
import re
import sys
import tempfile

STARTUP_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|I\d{4} [\d:.]+ +\d+ \S+:\d+\]"  # absl INFO lines
    rb"|E\d{4} .*(failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory)"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)
# The start of a line that may still turn out to be noise, held back until its end arrives.
_MAYBE_NOISE = re.compile(rb"^(W(A(R(N(I(N(G(:.*)?)?)?)?)?)?)?|[IE]\d*( .*)?|T(o( .*)?)?)$")


class StartupNoiseFilter:
    """Fed the child's output in chunks as they come, returns what to show of each.

    Whole lines are checked against `STARTUP_NOISE`; a line's unfinished tail is shown at once
    (progress bars redraw without a newline) unless it may be the start of a noise line.
    """

    def __init__(self):
        self._held = b""
        self._at_line_start = True

    def __call__(self, chunk):
        data, shown = self._held + chunk, []
        self._held = b""
        *lines, tail = data.split(b"\n")
        for line in lines:
            if not (self._at_line_start and STARTUP_NOISE.match(line)):
                shown.append(line + b"\n")
            self._at_line_start = True
        if self._at_line_start and _MAYBE_NOISE.match(tail):
            self._held = tail
        elif tail:
            shown.append(tail)
            self._at_line_start = False
        return b"".join(shown)

    def flush(self):
        """What is still held back once the output has ended."""
        held, self._held = self._held, b""
        self._at_line_start = True  # ready for the next child
        return held


@contextlib.contextmanager
def quiet_startup(enabled=True):
    """Drops the start-up notices TensorFlow prints to stderr if it starts in this process.

    Its C++ logging writes straight to file descriptor 2, so stderr is caught at that level for
    the block and what was caught is shown afterwards through `StartupNoiseFilter`: real
    warnings and errors still appear, after the block. Does nothing when `enabled` is false
    or TensorFlow already runs here (its notices are behind it).
    """
    if not enabled or "tensorflow" in sys.modules:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            caught = stack.enter_context(tempfile.TemporaryFile())
        except OSError:  # nowhere to keep it (a full disk): the notices are shown
            caught = None
        if caught is None:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            show = StartupNoiseFilter()
            kept = show(caught.read()) + show.flush()
            if kept:
                sys.stderr.write(kept.decode("utf-8", errors="replace"))
                sys.stderr.flush()
