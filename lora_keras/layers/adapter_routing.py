"""Which adapter each example of the current call uses, shared by a model's multi-LoRA layers."""

import contextlib

import keras
import numpy as np


class AdapterRouting:
    """Holds the `adapter_ids` of one call for every multi-LoRA layer of a model.

    KerasHub's attention and feed-forward layers call their projections with the
    hidden states only, so the ids cannot travel as an argument; the model
    (`gpt2_surgery.MultiAdapterGPT2CausalLM`) sets them here for the length of
    its call, and each layer reads them. Under `tf.function` or `jax.jit` the
    ids are the traced tensor of the same trace, as any other input is.
    """

    def __init__(self, adapter_names=()):
        self.adapter_names = list(adapter_names)
        self.adapter_ids = None

    @contextlib.contextmanager
    def ids_for_call(self, adapter_ids):
        """Within this context, the layers sharing this routing use `adapter_ids`."""
        check_adapter_ids(adapter_ids, self.adapter_names)
        outer, self.adapter_ids = self.adapter_ids, adapter_ids
        try:
            yield
        finally:
            self.adapter_ids = outer


def step_inputs(train_step_args):
    """The inputs `x` of the batch a `train_step` is given, on every backend.

    The batch is the last argument (JAX's first is the state), as Keras unpacks it.
    A model routing adapters sets the ids for the whole step, not only its forward pass:
    TensorFlow and torch recompute rematerialised blocks while computing the gradient,
    after `call` has returned.
    """
    x, _, _ = keras.utils.unpack_x_y_sample_weight(train_step_args[-1])  # a list on torch
    return x


def known_values(ids):
    """`ids` as NumPy when their values are known now, or None inside a trace."""
    if isinstance(ids, (list, tuple, np.ndarray, int, np.integer)):
        return np.asarray(ids)
    if keras.backend.is_keras_tensor(ids):
        return None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return ids.numpy() if tf.executing_eagerly() else None
    if backend == "jax":
        import jax

        return None if isinstance(ids, jax.core.Tracer) else np.asarray(ids)
    if backend == "torch":
        return None if ids.device.type == "meta" else ids.detach().cpu().numpy()
    return None


def check_adapter_ids(adapter_ids, adapter_names):
    """Refuses ids that are not integers naming one of `adapter_names`, where they are known.

    Inside a trace (`tf.function`, `jax.jit`) nothing can be checked: the model checks the
    `adapter_ids` of its data before `fit`, `evaluate` and `predict` start.
    """
    values = known_values(adapter_ids)
    if values is None or not adapter_names:
        return
    count = len(adapter_names)
    listed = ", ".join(f"{k}: {name!r}" for k, name in enumerate(adapter_names))
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"adapter_ids must be integers (int32), one per sequence, got dtype {values.dtype}. "
            f"The adapters are {listed}."
        )
    wrong = values[(values < 0) | (values >= count)]
    if wrong.size:
        raise ValueError(
            f"adapter_ids {sorted(set(wrong.tolist()))} are out of range: this model holds "
            f"{count} adapters ({listed}), so ids go from 0 to {count - 1}."
        )
