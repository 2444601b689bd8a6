"""Which adapter each example of the current call uses, shared by a model's multi-LoRA layers."""

import contextlib


class AdapterRouting:
    """Holds the `adapter_ids` of one call for every multi-LoRA layer of a model.

    KerasHub's attention and feed-forward layers call their projections with the
    hidden states only, so the ids cannot travel as an argument; the model
    (`gpt2_surgery.MultiAdapterGPT2CausalLM`) sets them here for the length of
    its call, and each layer reads them. Under `tf.function` or `jax.jit` the
    ids are the traced tensor of the same trace, as any other input is.
    """

    def __init__(self):
        self.adapter_ids = None

    @contextlib.contextmanager
    def ids_for_call(self, adapter_ids):
        """Within this context, the layers sharing this routing use `adapter_ids`."""
        outer, self.adapter_ids = self.adapter_ids, adapter_ids
        try:
            yield
        finally:
            self.adapter_ids = outer
