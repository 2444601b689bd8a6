import keras
import numpy as np
import pytest

from lora_keras.measure import callbacks
from lora_keras.measure.callbacks import LossHistory, MemoryCallback, StepTimeCallback

BATCH_SIZE = 3
STEPS_PER_EPOCH = 4
EPOCHS = 2


@pytest.fixture(scope="module")
def fitted():
    """A tiny regression fit for two epochs with all three callbacks (learning rate 0)."""
    keras.utils.set_random_seed(0)
    x = np.random.rand(BATCH_SIZE * STEPS_PER_EPOCH, 4).astype("float32")
    y = np.random.rand(BATCH_SIZE * STEPS_PER_EPOCH, 1).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    # A learning rate of 0 keeps the weights fixed, so each step's true loss can be recomputed.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    memory = MemoryCallback()
    timer = StepTimeCallback(tokens_per_step=BATCH_SIZE * 4)
    losses = LossHistory()
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[memory, timer, losses],
    )
    return model, x, y, memory, timer, losses


def test_memory_callback_records_a_process_peak_on_cpu(fitted):
    memory = fitted[3]
    assert len(memory.history) == len(memory.current_history) == STEPS_PER_EPOCH * EPOCHS
    assert memory.peak_bytes == max(memory.history) > 10 * 1024**2
    assert "ru_maxrss" in memory.source


def test_memory_callback_resets_its_probe_when_training_begins():
    class FakeProbe:
        source = "fake allocator"
        resettable = True
        resets = 0

        def reset(self):
            self.resets += 1

        def peak_bytes(self):
            return 100 * (self.resets + 1)

        def current_bytes(self):
            return 50

    memory = MemoryCallback(FakeProbe())
    memory.on_train_begin()
    memory.on_train_batch_end(0)
    assert (memory.history, memory.current_history, memory.peak_bytes) == ([200], [50], 200)
    assert memory.source == "fake allocator"


def test_memory_callback_peak_before_training_is_an_error():
    with pytest.raises(ValueError, match="has recorded no training step yet: pass it to `fit`"):
        MemoryCallback().peak_bytes  # noqa: B018


def test_step_time_summary_after_fit_reports_the_first_step_apart(fitted):
    timer = fitted[4]
    summary = timer.summary()
    assert summary["steps"] == len(timer.step_times) == STEPS_PER_EPOCH * EPOCHS
    # The first step traces and compiles the train function: far slower than the others.
    assert summary["first_step_s"] > summary["step_time_s"] > 0
    assert summary["step_time_min_s"] <= summary["step_time_p25_s"] <= summary["step_time_s"]
    assert summary["step_time_s"] <= summary["step_time_p75_s"] <= summary["step_time_max_s"]
    assert summary["tokens_per_s"] == pytest.approx(BATCH_SIZE * 4 / summary["step_time_s"])


def test_step_time_summary_is_median_and_spread_of_the_steady_steps(monkeypatch):
    # (begin, end) pairs: steps of 10 s, then 1, 2, 3 and 4 s.
    ticks = iter([0, 10, 10, 11, 20, 22, 30, 33, 40, 44])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(ticks))
    timer = StepTimeCallback(tokens_per_step=100)
    timer.on_train_begin()
    for step in range(5):
        timer.on_train_batch_begin(step)
        timer.on_train_batch_end(step)
    assert timer.summary() == {
        "first_step_s": 10.0,
        "step_time_s": 2.5,
        "step_time_p25_s": 1.75,
        "step_time_p75_s": 3.25,
        "step_time_min_s": 1.0,
        "step_time_max_s": 4.0,
        "tokens_per_s": 40.0,
        "steps": 5,
    }


def test_step_time_divides_a_group_of_steps_evenly(monkeypatch):
    ticks = iter([0.0, 8.0])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(ticks))
    timer = StepTimeCallback()
    timer.on_train_begin()
    # With steps_per_execution=4 Keras calls the hooks with the first and last step of a group.
    timer.on_train_batch_begin(0)
    timer.on_train_batch_end(3)
    assert (timer.step_times, timer.steps) == ([2.0], 4)


def test_step_time_summary_needs_two_steps():
    timer = StepTimeCallback()
    timer.on_train_begin()
    with pytest.raises(ValueError, match=r"recorded 0 step\(s\), but a summary needs at least 2"):
        timer.summary()
    with pytest.raises(ValueError, match="Run more steps."):
        timer.summary()


def test_loss_history_recovers_each_steps_loss_from_keras_running_mean(fitted):
    model, x, y, _, _, losses = fitted
    kernel, bias = model.get_weights()
    predictions = x @ kernel + bias
    per_batch = [
        float(np.mean((predictions[i : i + BATCH_SIZE] - y[i : i + BATCH_SIZE]) ** 2))
        for i in range(0, len(x), BATCH_SIZE)
    ]
    np.testing.assert_allclose(losses.losses, per_batch * EPOCHS, rtol=1e-4)
    # What Keras reports is the running mean, which differs from the step's loss.
    np.testing.assert_allclose(
        losses.running_means[:STEPS_PER_EPOCH], np.cumsum(per_batch) / np.arange(1, 5), rtol=1e-4
    )


def test_loss_history_without_a_loss_is_an_error():
    history = LossHistory()
    with pytest.raises(ValueError, match="found no 'loss' in the batch logs: compile the model"):
        history.on_train_batch_end(0, {})
