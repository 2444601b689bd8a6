"""Keras callbacks that measure a training run: peak memory, step time, per-step loss.

They are ordinary callbacks: pass them to any `fit`. None of them declares itself `async_safe`,
so Keras calls them synchronously after each step, having first converted the step's logs to
Python floats. That conversion waits for the step's loss to be computed, which is what makes a
wall-clock step time honest on backends that dispatch work asynchronously (JAX, a GPU).
"""

import time

import keras
import numpy as np

from lora_keras.measure.memory import memory_probe


class MemoryCallback(keras.callbacks.Callback):
    """Record the peak memory of a `fit`, after every training step.

    The probe is reset when training begins (where the device allows it: see
    `lora_keras.measure.memory`), then read after every step.

    Args:
        probe: a memory probe; `None` picks one for the backend and device with `memory_probe()`.

    Attributes:
        history: the peak so far, in bytes, after each step.
        current_history: the memory in use, in bytes, after each step.
        peak_bytes: the peak over the run, in bytes.
        source: what was measured, to write next to the figure.

    Example:

    ```python
    memory = MemoryCallback()
    model.fit(x, y, callbacks=[memory])
    print(memory.peak_bytes, memory.source)
    ```
    """

    def __init__(self, probe=None):
        super().__init__()
        self.probe = probe or memory_probe()
        self.history = []
        self.current_history = []

    @property
    def source(self):
        return self.probe.source

    @property
    def peak_bytes(self):
        if not self.history:
            raise ValueError(
                "MemoryCallback has recorded no training step yet: pass it to `fit` first."
            )
        return max(self.history)

    def on_train_begin(self, logs=None):
        self.history = []
        self.current_history = []
        self.probe.reset()

    def on_train_batch_end(self, batch, logs=None):
        self.history.append(self.probe.peak_bytes())
        self.current_history.append(self.probe.current_bytes())


class StepTimeCallback(keras.callbacks.Callback):
    """Time every training step; the first (tracing and compilation) is reported apart.

    With `steps_per_execution > 1` Keras calls the batch hooks once per group of steps; the
    group's time is divided evenly between its steps.

    Args:
        tokens_per_step: tokens in one batch (batch size x sequence length), for tokens/s;
            `None` leaves `tokens_per_s` out of the summary.

    Attributes:
        step_times: seconds per step, one entry per call of the train function.

    Example:

    ```python
    timer = StepTimeCallback(tokens_per_step=4 * 128)
    model.fit(x, y, callbacks=[timer])
    print(timer.summary()["step_time_s"])
    ```
    """

    def __init__(self, tokens_per_step=None):
        super().__init__()
        self.tokens_per_step = tokens_per_step
        self.step_times = []
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.step_times = []
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._begin_step = batch
        self._begin_time = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        elapsed = time.perf_counter() - self._begin_time
        steps = batch - self._begin_step + 1
        self.step_times.append(elapsed / steps)
        self.steps += steps

    def summary(self):
        """Return the first step apart, then the median and spread of the steady-state steps.

        Returns:
            A dict with `first_step_s`, `step_time_s` (median of the steps after the first),
            `step_time_p25_s`, `step_time_p75_s`, `step_time_min_s`, `step_time_max_s`,
            `tokens_per_s` (`None` without `tokens_per_step`) and `steps` (steps timed).
        """
        if len(self.step_times) < 2:
            raise ValueError(
                f"StepTimeCallback recorded {len(self.step_times)} step(s), but a summary needs "
                "at least 2: the first (tracing and compilation) is reported apart from the "
                "steady state. Run more steps."
            )
        # The median, not the mean: one slow step (garbage collection, a noisy neighbour on a
        # shared machine) would drag a mean but barely moves a median.
        steady = np.asarray(self.step_times[1:])
        median = float(np.median(steady))
        return {
            "first_step_s": float(self.step_times[0]),
            "step_time_s": median,
            "step_time_p25_s": float(np.percentile(steady, 25)),
            "step_time_p75_s": float(np.percentile(steady, 75)),
            "step_time_min_s": float(steady.min()),
            "step_time_max_s": float(steady.max()),
            "tokens_per_s": self.tokens_per_step / median if self.tokens_per_step else None,
            "steps": self.steps,
        }


class LossHistory(keras.callbacks.Callback):
    """Record the loss of every training step (Keras's `History` keeps one value per epoch).

    The `loss` Keras passes to the batch hooks is not the step's loss: in Keras 3 it is a running
    mean over the epoch so far, weighted by batch size (`Trainer._loss_tracker`, a `Mean` metric
    reset at each epoch start). We recover each step's own loss from it:
    `loss_n = n * mean_n - (n - 1) * mean_(n-1)`. That is exact when every batch has the same
    size (a comparison drops the last partial batch) and the model uses Keras's `train_step`.
    With `steps_per_execution > 1` one value covers each group of steps: their mean.

    Attributes:
        losses: the loss of each step.
        running_means: the running means Keras reported, kept to check the recovery against.

    Example:

    ```python
    loss_history = LossHistory()
    model.fit(x, y, callbacks=[loss_history])
    print(loss_history.losses)
    ```
    """

    def __init__(self):
        super().__init__()
        self.losses = []
        self.running_means = []

    def on_train_begin(self, logs=None):
        self.losses = []
        self.running_means = []

    def on_epoch_begin(self, epoch, logs=None):
        # Keras resets its loss tracker here too: the running mean starts again.
        self._steps_seen = 0
        self._loss_sum = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if "loss" not in (logs or {}):
            raise ValueError(
                "LossHistory found no 'loss' in the batch logs: compile the model with a loss."
            )
        running_mean = float(logs["loss"])
        steps_seen = batch + 1
        loss_sum = running_mean * steps_seen
        self.losses.append((loss_sum - self._loss_sum) / (steps_seen - self._steps_seen))
        self.running_means.append(running_mean)
        self._steps_seen = steps_seen
        self._loss_sum = loss_sum
