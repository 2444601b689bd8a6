"""Our LoRA layers under torch.compile: after the first steps, nothing compiles again.

Keras's torch.compile of a whole GPT-2 step is refused (`RunSpec._check_torch_compile`: Keras's
own layer calls break the graph and exhaust dynamo's recompile limit). This checks the part that
is ours: a LoRA layer reads no Python state that changes from step to step, so once the step has
compiled, later steps reuse it.
"""

import keras
import numpy as np
import pytest

import lora_keras as lk

pytestmark = pytest.mark.backends


def compiled_graphs():
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_lora_layer_steps_compile_once():
    if keras.backend.backend() != "torch":
        pytest.skip("torch.compile: the torch backend's jit_compile")
    import torch

    torch._dynamo.reset()
    query = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 8), bias_axes="de")
    query.build((None, None, 16))
    model = keras.Sequential([keras.Input((5, 16)), lk.LoraEinsumDense(query, rank=2)])
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="mse", jit_compile=True)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 5, 16)), rng.normal(size=(2, 5, 2, 8))
    # The first two steps compile: the first with no gradients yet, the second with them.
    losses = [float(model.train_on_batch(x, y)) for _ in range(2)]
    warm = compiled_graphs()
    assert warm > 0  # the step did compile
    losses += [float(model.train_on_batch(x, y)) for _ in range(3)]
    assert compiled_graphs() == warm
    assert losses[-1] < losses[0]  # it trained, compiled
