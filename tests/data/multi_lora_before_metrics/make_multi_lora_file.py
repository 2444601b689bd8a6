"""Writes multi_lora.keras and outputs.npz: a tiny two-adapter model as lora_keras saved it
before the per-adapter loss metric (commit 77eb9e8). Run once with that version; never rewrite.

    git worktree add /tmp/old 77eb9e8
    python -c "import runpy, sys; sys.meta_path = [f for f in sys.meta_path if 'editable' \
        not in repr(f).lower()]; sys.path.insert(0, '/tmp/old'); \
        runpy.run_path(sys.argv[1], run_name='__main__')" \
        tests/data/multi_lora_before_metrics/make_multi_lora_file.py

(An editable install's finder comes before PYTHONPATH: it is dropped so /tmp/old's code runs.)
"""

import os

import keras
import keras_hub
import numpy as np

import lora_keras as lk

HERE = os.path.dirname(os.path.abspath(__file__))

keras.utils.set_random_seed(0)
backbone = keras_hub.models.GPT2Backbone(
    vocabulary_size=64,
    num_layers=2,
    num_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
    max_sequence_length=16,
)
lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
lk.apply_multi_lora(lm, {"small": {"rank": 2}, "big": {"rank": 4, "alpha": 8.0}})
for layer in lk.multi_lora_layers(lm).values():  # B nonzero, so each adapter changes the output
    values = np.random.default_rng(1).normal(size=layer.lora_kernel_b.shape)
    layer.lora_kernel_b.assign(values.astype("float32"))
token_ids = (np.arange(24).reshape(2, 12) % 64).astype("int32")
x = {
    "token_ids": token_ids,
    "padding_mask": np.ones_like(token_ids),
    "adapter_ids": np.array([0, 1], "int32"),
}
lm.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
lm.save(os.path.join(HERE, "multi_lora.keras"))
logits = keras.ops.convert_to_numpy(lm(x))
np.savez(os.path.join(HERE, "outputs.npz"), token_ids=token_ids, logits=logits)
