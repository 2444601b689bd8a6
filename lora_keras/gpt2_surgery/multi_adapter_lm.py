"""Many adapters: the task model that takes `adapter_ids` and hands them to the layers."""

import keras
import keras_hub

from lora_keras.gpt2_surgery.lookups import multi_lora_layers
from lora_keras.layers.adapter_routing import check_adapter_ids, step_inputs
from lora_keras.layers.per_adapter_loss import PerAdapterLoss

# --- Many adapters: the task model that takes `adapter_ids` ---------------------------------


def refuse_if_multi_lora(model, action, reason):
    """Raises, naming `action` and `reason`, if `model` holds several adapters (m-LoRA)."""
    layers = multi_lora_layers(model)
    if layers:
        names = next(iter(layers.values())).adapter_names
        raise ValueError(
            f"Cannot {action}: this model holds several LoRA adapters ({', '.join(names)}) "
            f"on one frozen base (`lk.apply_multi_lora`), and {reason} Save each adapter with "
            "`lk.save_adapter(model, path, adapter=NAME)` and load it into its own model."
        )


def check_multi_adapter_lm(model):
    """Refuses a model that cannot become a `MultiAdapterGPT2CausalLM`: a backbone, a subclass."""
    if type(model) not in (keras_hub.models.GPT2CausalLM, MultiAdapterGPT2CausalLM):
        raise ValueError(
            "Several adapters need a `keras_hub.models.GPT2CausalLM`, whose inputs gain "
            f"'adapter_ids' and hand them to the layers; got {type(model).__name__}. Build "
            "one around the backbone: `keras_hub.models.GPT2CausalLM(backbone, "
            "preprocessor=None)`."
        )


def settle_multi_adapter_lm(model):
    """Makes a `GPT2CausalLM` with several adapters a `MultiAdapterGPT2CausalLM`."""
    check_multi_adapter_lm(model)
    model.__class__ = MultiAdapterGPT2CausalLM
    model.track_adapter_losses()


@keras.saving.register_keras_serializable(package="lora_keras")
class MultiAdapterGPT2CausalLM(keras_hub.models.GPT2CausalLM):
    """A `GPT2CausalLM` holding several LoRA adapters, whose inputs also take `adapter_ids`.

    `adapter_ids` (int32, one per sequence) says which adapter each sequence
    uses: its position in the dict `lk.apply_multi_lora` was given
    (`lk.adapter_names(model)`). The model hands them to its multi-LoRA layers
    for the length of each call (`AdapterRouting`), in `call`, `fit`, `predict`,
    `evaluate` and `generate` alike; the rest is KerasHub's. `lk.apply_multi_lora`
    makes a model this class; it is never built directly.

    `fit` and `evaluate` log each adapter's own loss beside the batch's `loss`:
    `loss_NAME`, its mean next-token cross-entropy over its counted tokens (those
    `sample_weight` weighs, or without it those of `padding_mask`), from a
    `lk.PerAdapterLoss` metric that Keras resets each epoch. A metric compiled with
    the same name (`compile(weighted_metrics=[...])`) is reported in its place.
    """

    def __init__(self, *args, **kwargs):
        # Only a saved model is built anew (`from_config`); `apply_multi_lora` changes the class
        # of one that exists, then calls `track_adapter_losses` itself.
        super().__init__(*args, **kwargs)
        self.track_adapter_losses()

    def track_adapter_losses(self):
        """Gives the model its `PerAdapterLoss` metric, once; Keras lists it in `metrics`."""
        if getattr(self, "per_adapter_loss", None) is None:
            self.per_adapter_loss = PerAdapterLoss(self._routing().adapter_names)

    @property
    def metrics(self):
        # Right after the loss tracker, before the compiled metrics: Keras reports the last of
        # two metrics with one name, so a compiled metric named `loss_NAME` is the one reported.
        own = getattr(self, "per_adapter_loss", None)
        if own is None:  # while KerasHub builds the model, before it is given
            return super().metrics
        listed = [m for m in super().metrics if m is not own]
        after_loss = next((i + 1 for i, m in enumerate(listed) if m.name == "loss"), 0)
        return [*listed[:after_loss], own, *listed[after_loss:]]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if y is not None:
            _, adapter_ids = self._split_ids(x)
            counted = x.get("padding_mask") if sample_weight is None else sample_weight
            self.per_adapter_loss.update_state(adapter_ids, y, y_pred, counted)
        # After the update: Keras's own collects every metric's result, this one's included.
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def _routing(self):
        return next(iter(multi_lora_layers(self).values())).routing

    def _split_ids(self, inputs):
        """`(inputs without adapter_ids, adapter_ids)`, or a ValueError naming the adapters."""
        if not isinstance(inputs, dict) or "adapter_ids" not in inputs:
            names = self._routing().adapter_names
            listed = ", ".join(f"{k}: {name!r}" for k, name in enumerate(names))
            raise ValueError(
                f"This model holds several adapters ({listed}): its inputs need "
                "'adapter_ids' (int32, one per sequence) beside 'token_ids' and "
                "'padding_mask', e.g. `{**x, 'adapter_ids': np.array([0, 1])}`."
            )
        rest = {key: value for key, value in inputs.items() if key != "adapter_ids"}
        return rest, inputs["adapter_ids"]

    def _check_data(self, x):
        """Checks the `adapter_ids` of in-memory data before a traced loop hides their values."""
        if isinstance(x, dict):
            _, ids = self._split_ids(x)
            check_adapter_ids(ids, self._routing().adapter_names)

    def call(self, inputs, training=None, mask=None, **kwargs):
        inputs, adapter_ids = self._split_ids(inputs)
        if isinstance(mask, dict):
            mask = {key: value for key, value in mask.items() if key != "adapter_ids"}
        with self._routing().ids_for_call(adapter_ids):
            return super().call(inputs, training=training, mask=mask, **kwargs)

    def train_step(self, *args, **kwargs):
        _, adapter_ids = self._split_ids(step_inputs(args))  # set for the whole step
        with self._routing().ids_for_call(adapter_ids):
            return super().train_step(*args, **kwargs)

    def generate_step(self, inputs, stop_token_ids=None):
        inputs, adapter_ids = self._split_ids(inputs)
        with self._routing().ids_for_call(adapter_ids):
            return super().generate_step(inputs, stop_token_ids=stop_token_ids)

    def fit(self, x=None, *args, **kwargs):
        self._check_data(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_data(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_data(x)
        return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, *args, **kwargs):
        self._check_data(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        self._check_data(x)
        return super().test_on_batch(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._check_data(x)
        return super().predict_on_batch(x)
