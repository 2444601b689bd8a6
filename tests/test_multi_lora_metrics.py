"""Each adapter's own loss in `fit` and `evaluate` logs: `loss_NAME`, as `adapter_losses` has it."""

import keras
import numpy as np
import pytest
from conftest import make_tiny_lm
from test_multi_lora_model import batch, multi_lm, randomize

import lora_keras as lk
from lora_keras.multi_lora import adapter_losses, adapter_names, adapter_sample_weight

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled(lm, learning_rate=0.0):
    """Compiled with plain SGD; at 0 the weights stay, so every step sees the same model."""
    lm.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=LOSS)
    return lm


def padded_batch(ids, seed=0):
    """A batch whose first sequence ends in 3 padding tokens."""
    x, y = batch(ids=ids, seed=seed)
    x["padding_mask"] = x["padding_mask"].copy()
    x["padding_mask"][0, -3:] = 0
    return x, y


def loss_names(lm):
    return [f"loss_{name}" for name in adapter_names(lm)]


def adapter_keys(logs, prefix="loss_"):
    """The per-adapter entries of `logs` (KerasHub's compile adds its accuracy beside them)."""
    return sorted(key for key in logs if key.startswith(prefix))


def assert_matches(logs, expected, prefix="loss_"):
    assert set(expected) <= {key.removeprefix(prefix) for key in logs}
    for name, value in expected.items():
        np.testing.assert_allclose(logs[prefix + name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True], ids=["padding_mask", "adapter_sample_weight"])
def test_evaluate_logs_each_adapters_loss_as_adapter_losses_computes_it(weighted):
    lm = compiled(multi_lm())
    ids = np.array([1, 0, 1, 1], "int32")
    x, y = padded_batch(ids)
    weights = adapter_sample_weight(ids, x["padding_mask"]) if weighted else None
    logs = lm.evaluate(x, y, sample_weight=weights, batch_size=4, verbose=0, return_dict=True)
    assert adapter_keys(logs) == sorted(loss_names(lm))
    assert_matches(logs, adapter_losses(lm, x, y))


def test_a_batch_without_an_adapter_adds_nothing_to_its_loss():
    lm = compiled(multi_lm())
    ids = np.array([1, 1, 0, 1], "int32")  # the first batch of 2 has no "small" example
    x, y = padded_batch(ids)
    logs = lm.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert_matches(logs, adapter_losses(lm, x, y))  # token-weighted over both batches
    only_big = {key: value[ids == 1] for key, value in x.items()}
    logs = lm.evaluate(only_big, y[ids == 1], batch_size=3, verbose=0, return_dict=True)
    assert logs["loss_small"] == 0.0  # nothing counted: 0, not NaN
    assert_matches(logs, adapter_losses(lm, only_big, y[ids == 1]))


class NewAdaptersAfterTheFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            randomize(self.model, seed=1)


def test_fit_logs_each_adapters_loss_epoch_by_epoch():
    """The metric starts each epoch from zero: the second epoch's loss is its own model's alone
    (the learning rate is 0, so only the callback changes the adapters)."""
    lm = compiled(multi_lm())
    x, y = padded_batch(np.array([1, 0, 1, 0], "int32"))
    first = adapter_losses(lm, x, y)
    callbacks = [NewAdaptersAfterTheFirstEpoch()]
    history = lm.fit(x, y, epochs=2, batch_size=4, callbacks=callbacks, verbose=0).history
    assert adapter_keys(history) == sorted(loss_names(lm))
    for epoch, expected in enumerate((first, adapter_losses(lm, x, y))):
        logs = {key: values[epoch] for key, values in history.items()}
        assert_matches(logs, expected)
    assert history["loss_small"][0] != history["loss_small"][1]


def test_validation_logs_each_adapters_loss():
    lm = compiled(multi_lm(), learning_rate=0.1)
    x, y = batch()
    history = lm.fit(x, y, validation_data=batch(seed=2), epochs=1, verbose=0).history
    assert adapter_keys(history, "val_loss_") == sorted(f"val_{n}" for n in loss_names(lm))
    assert all(np.isfinite(values[0]) for values in history.values())


def test_one_metric_whatever_the_compiles_and_none_on_plain_models():
    lm = multi_lm()
    compiled(compiled(lm))
    assert sum(isinstance(m, lk.PerAdapterLoss) for m in lm.metrics) == 1
    x, y = batch()
    plain_x = {key: value for key, value in x.items() if key != "adapter_ids"}
    plain = compiled(make_tiny_lm())
    before = plain.evaluate(plain_x, y, verbose=0, return_dict=True)
    assert "loss" in before and adapter_keys(before) == []
    lk.apply_lora(plain, rank=2)
    compiled(plain)
    assert sorted(plain.evaluate(plain_x, y, verbose=0, return_dict=True)) == sorted(before)


def test_a_compiled_metric_of_the_same_name_is_reported_in_its_place():
    """As `sweep --together` compiles its own per-step `loss_NAME` metrics."""
    lm = multi_lm()
    constant = keras.metrics.MeanMetricWrapper(
        lambda y_true, y_pred: keras.ops.full(keras.ops.shape(y_true), 7.0), name="loss_small"
    )
    lm.compile(optimizer="sgd", loss=LOSS, weighted_metrics=[constant])
    x, y = batch()
    logs = lm.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss_small"] == pytest.approx(7.0)
    assert_matches(logs, {"big": adapter_losses(lm, x, y)["big"]})


def test_a_model_that_trained_before_its_adapters_logs_them():
    lm = compiled(make_tiny_lm())
    x, y = batch()
    lm.fit({key: value for key, value in x.items() if key != "adapter_ids"}, y, verbose=0)
    lk.apply_multi_lora(lm, {"small": {"rank": 2}, "big": {"rank": 4}})
    compiled(lm)
    logs = lm.evaluate(x, y, verbose=0, return_dict=True)
    assert_matches(logs, adapter_losses(lm, x, y))


def test_after_a_keras_round_trip(tmp_path):
    lm = compiled(multi_lm(), learning_rate=0.1)
    x, y = padded_batch(np.array([0, 1, 1, 0], "int32"))
    lm.fit(x, y, batch_size=2, verbose=0)
    path = tmp_path / "multi.keras"
    lm.save(path)
    restored = lk.load_model(path)  # compiled again from the file's compile config
    logs = restored.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert adapter_keys(logs) == sorted(loss_names(lm))
    assert_matches(logs, adapter_losses(lm, x, y))


def test_mixed_batches_put_each_adapters_batch_of_a_step_side_by_side():
    lm = compiled(multi_lm())
    own = {}
    for seed, name in enumerate(("big", "small")):  # not in the order of the ids
        x, y = padded_batch(np.zeros(4, "int32"), seed=seed)
        weights = x["padding_mask"].astype("float32")
        plain = {key: x[key] for key in ("token_ids", "padding_mask")}
        own[name] = lk.ArrayBatches((plain, y, weights), batch_size=2)  # 2 batches of 2
    batches = list(lk.mixed_batches(lm, {"big": own["big"], "small": own["small"]}))
    assert len(batches) == 2
    x, y, weights = keras.tree.map_structure(np.asarray, tuple(batches[1]))
    np.testing.assert_array_equal(x["adapter_ids"], [0, 0, 1, 1])  # small, then big
    np.testing.assert_array_equal(x["token_ids"][:2], own["small"][1][0]["token_ids"])
    np.testing.assert_array_equal(y[2:], own["big"][1][1])
    counted = np.concatenate([own["small"][1][2], own["big"][1][2]])
    np.testing.assert_allclose(weights, adapter_sample_weight(x["adapter_ids"], counted))
    logs = lm.evaluate(lk.mixed_batches(lm, own), verbose=0, return_dict=True)
    assert adapter_keys(logs) == sorted(loss_names(lm))
    with pytest.raises(ValueError, match=r"this model holds \['small', 'big'\], got \['tiny'\]"):
        lk.mixed_batches(lm, {"tiny": own["big"]})
