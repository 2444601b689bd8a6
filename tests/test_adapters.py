import h5py
import numpy as np
import pytest
from conftest import make_tiny_backbone, make_tiny_lm, randomize_lora_b, token_batch

import lora_keras as lk
from lora_keras import io_utils


def trained_lm(targets=("query", "value"), rank=4, seed=0):
    lm = make_tiny_lm(seed=seed)
    randomize_lora_b(lk.apply_lora(lm, rank=rank, alpha=16.0, targets=targets), seed=seed)
    return lm


def test_round_trip_into_a_fresh_plain_model(tmp_path):
    lm = trained_lm()
    x = token_batch()
    expected = lm(x).numpy()
    path = tmp_path / "tiny.lora.h5"
    lk.save_adapter(lm, path)

    fresh = make_tiny_lm(seed=0)  # same base weights, no LoRA yet
    assert not np.allclose(fresh(x), expected)
    settings = lk.load_adapter(fresh, path)
    assert settings == {
        "rank": 4,
        "alpha": 16.0,
        "dropout": 0.0,
        "rslora": False,
        "targets": ["query", "value"],
        "variant": "lora",
    }
    np.testing.assert_allclose(fresh(x), expected, rtol=1e-6, atol=1e-6)


def test_file_holds_only_lora_weights_keyed_by_layer_path(tmp_path):
    lm = trained_lm(targets=("value", "ffn_out"))
    path = tmp_path / "a.lora.h5"
    lk.save_adapter(lm, path)
    with h5py.File(path, "r") as file:
        names = []
        file.visititems(
            lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
        )
    assert sorted(names) == sorted(
        f"transformer_layer_{i}/{t}/lora_kernel_{ab}"
        for i in range(2)
        for t in ("value", "ffn_out")
        for ab in "ab"
    )


def test_layers_are_matched_by_path_not_position(tmp_path):
    """Each block's weights land in the same block (KerasHub issue 2701)."""
    lm = trained_lm()
    path = tmp_path / "a.lora.h5"
    lk.save_adapter(lm, path)
    fresh = make_tiny_lm(seed=0)
    lk.load_adapter(fresh, path)
    for layer_path, layer in lk.lora_layers(lm).items():
        loaded = lk.lora_layers(fresh)[layer_path]
        np.testing.assert_array_equal(loaded.lora_kernel_b.numpy(), layer.lora_kernel_b.numpy())


def test_load_into_a_merged_model_keeps_it_consistent(tmp_path):
    source = trained_lm(seed=1)
    x = token_batch()
    expected = source(x).numpy()
    lk.save_adapter(source, tmp_path / "a.lora.h5")
    target = make_tiny_lm(seed=1)  # the same base, with another update merged in
    randomize_lora_b(lk.apply_lora(target, rank=4, alpha=16.0), seed=2)
    lk.merge_lora(target)
    assert not np.allclose(target(x), expected)
    lk.load_adapter(target, tmp_path / "a.lora.h5")
    assert all(layer.merged for layer in lk.lora_layers(target).values())
    np.testing.assert_allclose(target(x), expected, rtol=1e-5, atol=1e-5)


def test_wrong_rank(tmp_path):
    lk.save_adapter(trained_lm(rank=4), tmp_path / "a.lora.h5")
    with pytest.raises(ValueError, match="Wrong rank: the adapter has rank 4, this model's LoRA"):
        lk.load_adapter(trained_lm(rank=2), tmp_path / "a.lora.h5")


def test_wrong_targets(tmp_path):
    lk.save_adapter(trained_lm(targets=("query", "value")), tmp_path / "a.lora.h5")
    with pytest.raises(
        ValueError, match="Wrong targets: the adapter covers \\['query', 'value'\\]"
    ):
        lk.load_adapter(trained_lm(targets=("query",)), tmp_path / "a.lora.h5")


def test_wrong_scaling(tmp_path):
    lk.save_adapter(trained_lm(), tmp_path / "a.lora.h5")
    other = make_tiny_lm()
    lk.apply_lora(other, rank=4, alpha=8.0)
    with pytest.raises(ValueError, match="Wrong scaling: the adapter was trained with alpha=16.0"):
        lk.load_adapter(other, tmp_path / "a.lora.h5")


def test_wrong_architecture(tmp_path):
    lk.save_adapter(trained_lm(), tmp_path / "a.lora.h5")
    import keras_hub

    wider = keras_hub.models.GPT2Backbone(
        vocabulary_size=97,
        num_layers=2,
        num_heads=4,
        hidden_dim=32,
        intermediate_dim=128,
        max_sequence_length=32,
    )
    with pytest.raises(ValueError, match="Wrong architecture: the adapter was saved from a GPT-2"):
        lk.load_adapter(wider, tmp_path / "a.lora.h5")
    assert lk.lora_layers(wider) == {}


def test_not_an_adapter_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="is not a lora_keras adapter file"):
        lk.load_adapter(make_tiny_backbone(), path)


def test_saving_a_model_without_lora_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match="Cannot save an adapter: this model has no LoRA or MixLoRA layers"
    ):
        lk.save_adapter(make_tiny_backbone(), tmp_path / "a.lora.h5")


def test_failed_save_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "a.lora.h5"
    lk.save_adapter(trained_lm(seed=1), path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # The last step of a whole write fails: the old file must still be there, whole.
    monkeypatch.setattr(io_utils.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        lk.save_adapter(trained_lm(seed=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.lora.h5"]


def edited_copy(source, destination, edit):
    destination.write_bytes(source.read_bytes())
    with h5py.File(destination, "r+") as file:
        edit(file)
    return destination


def test_adapter_missing_a_layer_changes_nothing(tmp_path):
    saved = tmp_path / "a.lora.h5"
    lk.save_adapter(trained_lm(), saved)
    broken = edited_copy(
        saved, tmp_path / "b.lora.h5", lambda f: f.__delitem__("transformer_layer_1/value")
    )
    plain = make_tiny_lm()
    before = lk.trainable_summary(plain)
    with pytest.raises(
        ValueError, match="missing \\['transformer_layer_1/value'\\], unexpected \\[\\]"
    ):
        lk.load_adapter(plain, broken)
    assert lk.lora_layers(plain) == {} and lk.trainable_summary(plain) == before


def test_adapter_of_the_wrong_shape(tmp_path):
    saved = tmp_path / "a.lora.h5"
    lk.save_adapter(trained_lm(), saved)

    def wrong_shape(file):
        file["transformer_layer_0/query"].attrs["kernel_shape"] = (64, 2, 32)

    broken = edited_copy(saved, tmp_path / "b.lora.h5", wrong_shape)
    with pytest.raises(
        ValueError, match="Adapter of the wrong shape for transformer_layer_0/query"
    ):
        lk.load_adapter(make_tiny_lm(), broken)


def test_adapter_of_another_version(tmp_path):
    saved = tmp_path / "a.lora.h5"
    lk.save_adapter(trained_lm(), saved)
    newer = edited_copy(saved, tmp_path / "b.lora.h5", lambda f: f.attrs.__setitem__("version", 3))
    with pytest.raises(
        ValueError, match="is a version 3 adapter file; this lora_keras reads versions up to 2"
    ):
        lk.load_adapter(make_tiny_lm(), newer)


def test_wrong_scaling_rule(tmp_path):
    lk.save_adapter(trained_lm(), tmp_path / "a.lora.h5")
    other = make_tiny_lm()
    lk.apply_lora(other, rank=4, alpha=16.0, rslora=True)
    with pytest.raises(
        ValueError, match="Wrong scaling: the adapter was trained with rslora=False"
    ):
        lk.load_adapter(other, tmp_path / "a.lora.h5")


@pytest.mark.parametrize(
    "content",
    [b"not an adapter at all", "truncated"],
    ids=["not-hdf5", "truncated"],
)
def test_a_damaged_adapter_file_is_refused_with_its_path(tmp_path, content):
    path = tmp_path / "bad.lora.h5"
    if content == "truncated":
        lk.save_adapter(trained_lm(), path)
        path.write_bytes(path.read_bytes()[:1500])
    else:
        path.write_bytes(content)
    lm = make_tiny_lm()
    with pytest.raises(ValueError, match=f"Cannot read '{path}' as an adapter file: it is damaged"):
        lk.load_adapter(lm, path)
    assert lk.lora_layers(lm) == {}


def test_a_missing_adapter_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"No adapter file at '{tmp_path / 'no.lora.h5'}'"):
        lk.load_adapter(make_tiny_lm(), tmp_path / "no.lora.h5")


def test_saving_into_a_missing_folder_names_the_folder(tmp_path):
    path = tmp_path / "missing" / "a.lora.h5"
    with pytest.raises(
        FileNotFoundError, match=f"the folder '{tmp_path / 'missing'}' does not exist"
    ):
        lk.save_adapter(trained_lm(), path)
