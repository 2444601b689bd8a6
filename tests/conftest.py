import os

# Tests run on TensorFlow unless the caller chose a backend; set before Keras loads.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lora_keras.levers.chunked_loss import ChunkedLossCausalLM  # noqa: E402

TINY_GPT2 = dict(
    vocabulary_size=97,
    num_layers=2,
    num_heads=4,
    hidden_dim=64,
    intermediate_dim=128,
    max_sequence_length=32,
)


def make_tiny_backbone(seed=0, dtype=None):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.GPT2Backbone(**TINY_GPT2, dropout=0.0, dtype=dtype)


def make_tiny_lm(seed=0, dtype=None):
    """A GPT2CausalLM with no preprocessor: it takes token ids directly."""
    return keras_hub.models.GPT2CausalLM(
        backbone=make_tiny_backbone(seed, dtype), preprocessor=None
    )


def token_batch(batch_size=2, sequence_length=12, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(0, TINY_GPT2["vocabulary_size"], (batch_size, sequence_length)),
        "padding_mask": np.ones((batch_size, sequence_length), dtype="int32"),
    }


def next_token_dataset(batch_size=2, sequence_length=12, seed=0):
    """`(x, y)` with y the next token, as a causal LM trains."""
    x = token_batch(batch_size, sequence_length + 1, seed)
    inputs = {key: value[:, :-1] for key, value in x.items()}
    return inputs, x["token_ids"][:, 1:]


def randomize_lora_b(wrappers, seed=0):
    """Gives every B a non-zero value so LoRA changes the output."""
    rng = np.random.default_rng(seed)
    for layer in wrappers:
        shape = tuple(layer.lora_kernel_b.shape)
        layer.lora_kernel_b.assign(rng.normal(0.0, 0.05, shape).astype("float32"))


@pytest.fixture
def tiny_backbone():
    return make_tiny_backbone()


@pytest.fixture
def tiny_lm():
    return make_tiny_lm()


def train_losses(lm, steps=3, jit_compile=False, model=None):
    """The loss of each of `steps` SGD steps on one fixed batch with padding."""
    x, y = next_token_dataset()
    weights = np.ones(y.shape, dtype="float32")
    weights[0, -3:] = 0.0  # padding: the loss must weigh it out the same way
    model = model or lm
    loss = None if isinstance(model, ChunkedLossCausalLM) else "sparse_categorical_crossentropy"
    kwargs = {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)} if loss else {}
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile, **kwargs)
    return [
        float(model.train_on_batch(x, y, sample_weight=weights, return_dict=True)["loss"])
        for _ in range(steps)
    ]


def tiny_compare(tmp_path, monkeypatch, **settings):
    """`lk.compare` of LoRA on gpt2_tiny (rank 2, 2 steps of 2 x 32 tokens) into
    `tmp_path / "report"`, its tokenizer cached under `tmp_path`; `settings` add or replace."""
    import lora_keras as lk

    monkeypatch.setenv("LORA_KERAS_CACHE", str(tmp_path / "cache"))
    tiny = dict(
        preset="gpt2_tiny",
        weights="random",
        modes=("lora",),
        steps=2,
        batch_size=2,
        sequence_length=32,
        rank=2,
        out=str(tmp_path / "report"),
        verbose=False,
    )
    return lk.compare(**(tiny | settings))


def make_short_text_lm(cache):
    """A 2-layer, 64-wide GPT-2 reading 16 tokens (the corpus's documents truncate), with a
    300-token local tokenizer cached in `cache`."""
    from lora_keras.data import embedded_corpus
    from lora_keras.models.tokenizer import local_gpt2_tokenizer

    tokenizer, _ = local_gpt2_tokenizer(embedded_corpus()[:60], 300, cache=cache)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=300,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=16,
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=16)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
