import math

import numpy as np
import pytest
from keras import ops

import lora_keras as lk
from lora_keras.layers.nf4_codec import (
    dequantize_arrays,
    stored_absmax,
    stored_shapes,
    waiting_for,
)
from lora_keras.nf4_format import nf4_bits_per_weight

# Portable: CI runs this file again under jax and torch.
pytestmark = pytest.mark.backends

# QLoRA's published NF4 table (Dettmers et al. 2023, appendix E; bitsandbytes).
PUBLISHED_NF4 = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
]


def normal_weights(shape, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.02, shape).astype("float32")


def unpack(codes):
    return np.stack([codes >> 4, codes & 15], axis=-1).reshape(-1)


def reference_nearest(x, q):
    """Plain nearest code: argmin over the 16 values times the block's stored absmax."""
    scale = ops.convert_to_numpy(
        stored_absmax(**{k: v for k, v in q.arrays.items() if k != "codes"})
    )
    scale = scale.astype("float64")
    flat = x.reshape(-1).astype("float64")
    blocks = np.pad(flat, (0, -flat.size % q.block_size)).reshape(-1, q.block_size)
    candidates = lk.NF4_VALUES.astype("float64")[None, None, :] * scale[:, None, None]
    codes = np.abs(blocks[..., None] - candidates).argmin(axis=-1)
    values = lk.NF4_VALUES.astype("float64")[codes] * scale[:, None]
    return codes.reshape(-1), values.reshape(-1)[: flat.size].reshape(x.shape)


def test_code_book_is_the_published_table():
    assert lk.NF4_VALUES.shape == (16,) and lk.NF4_VALUES.dtype == np.float32
    np.testing.assert_allclose(lk.NF4_VALUES, PUBLISHED_NF4, atol=1e-6)
    assert (np.diff(lk.NF4_VALUES) > 0).all()
    assert (lk.NF4_VALUES < 0).sum() == 7 and (lk.NF4_VALUES > 0).sum() == 8
    assert lk.NF4_VALUES[7] == 0.0 and lk.NF4_VALUES[0] == -1.0 and lk.NF4_VALUES[-1] == 1.0


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("shape", [(64, 96), (3, 7, 5)])
def test_quantize_picks_the_nearest_code_of_each_block(shape, double_quant):
    x = normal_weights(shape)
    q = lk.nf4_quantize(x, block_size=64, double_quant=double_quant)
    codes, values = reference_nearest(x, q)
    assert q.shape == shape and q.double_quant == double_quant
    np.testing.assert_array_equal(unpack(q.codes), codes)
    restored = lk.nf4_dequantize(q)
    assert restored.shape == shape and restored.dtype == np.float32
    np.testing.assert_allclose(restored, values, rtol=1e-6, atol=1e-9)
    # NF4 keeps a normal weight to a few percent of its scale, not exactly.
    error = np.abs(restored - x).mean() / np.abs(x).mean()
    assert 0.01 < error < 0.15


def test_without_double_quant_the_absmax_is_exact():
    x = normal_weights((8, 64))
    q = lk.nf4_quantize(x, double_quant=False)
    np.testing.assert_array_equal(q.absmax, np.abs(x).max(axis=1))
    assert q.absmax_codes is None and q.absmax_scales is None


def test_double_quant_absmax_is_8_bit_around_its_mean():
    x = normal_weights((600, 64))  # 600 blocks: three groups of 256, the last partial
    q = lk.nf4_quantize(x)
    assert q.absmax is None and q.absmax_codes.dtype == np.int8
    assert q.absmax_scales.shape == (3,) and q.absmax_scales.dtype == np.float32
    exact = np.abs(x).max(axis=1)
    np.testing.assert_allclose(q.absmax_mean, exact.mean(), rtol=1e-6)
    restored = ops.convert_to_numpy(
        stored_absmax(**{k: v for k, v in q.arrays.items() if k != "codes"})
    )
    per_block_scale = np.repeat(q.absmax_scales, 256)[:600]
    assert (np.abs(restored - exact) <= per_block_scale / 2 + 1e-7).all()


def test_storage_is_about_4_127_bits_a_weight_with_double_quant_and_4_5_without():
    x = normal_weights((768, 2304))  # GPT-2 base's query/key/value kernel
    dq = lk.nf4_quantize(x)
    plain = lk.nf4_quantize(x, double_quant=False)
    blocks = 768 * 2304 // 64
    assert dq.nbytes == 768 * 2304 // 2 + blocks + math.ceil(blocks / 256) * 4 + 4
    assert plain.nbytes == 768 * 2304 // 2 + blocks * 4
    assert dq.bits_per_weight == pytest.approx(4.127, abs=1e-3)
    assert plain.bits_per_weight == 4.5
    assert nf4_bits_per_weight() == pytest.approx(dq.bits_per_weight, abs=1e-4)
    assert nf4_bits_per_weight(double_quant=False) == 4.5
    assert {name: a.shape for name, a in dq.arrays.items()} == {
        name: shape for name, (shape, _) in stored_shapes((768, 2304), 64, True).items()
    }


def test_zeros_and_padding_round_trip():
    q = lk.nf4_quantize(np.zeros((3, 5)), block_size=4)
    np.testing.assert_array_equal(lk.nf4_dequantize(q), np.zeros((3, 5)))
    assert q.codes.shape == (8,)  # 15 values padded to 16, two codes a byte


@pytest.mark.parametrize("block_size", [0, 3, 2.5, 64.0, "64", True])
def test_bad_block_size_is_refused(block_size):
    with pytest.raises(ValueError, match="block_size must be an even integer .* got "):
        lk.nf4_quantize(np.ones((4, 4)), block_size=block_size)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((0, 4)), r"Cannot quantize an empty array \(shape \(0, 4\)\) to NF4"),
        (np.ones(4) * (1 + 1j), "Cannot quantize an array of dtype complex128 to NF4"),
        (np.array(["a", "b"]), "Cannot quantize an array of dtype <U1 to NF4"),
    ],
)
def test_arrays_nf4_cannot_hold_are_refused(x, message):
    with pytest.raises(ValueError, match=message):
        lk.nf4_quantize(x)


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="the tensor has NaN or infinite values"):
        lk.nf4_quantize(np.array([1.0, np.nan]))


@pytest.mark.parametrize(
    "after",
    [
        np.ones((2, 3, 4), "float32"),
        np.array([[np.nan, np.inf], [-np.inf, 0.0]], "float32"),
        np.zeros((0, 5), "float32"),
    ],
    ids=["finite", "nan-and-inf", "empty"],
)
def test_waiting_for_leaves_the_codes_and_the_dequantized_tensor_unchanged(after):
    q = lk.nf4_quantize(normal_weights((64, 48)))
    waited = ops.convert_to_numpy(waiting_for(ops.convert_to_tensor(q.codes), after))
    assert waited.dtype == np.uint8
    np.testing.assert_array_equal(waited, q.codes)
    dequantized = dequantize_arrays(q.shape, q.block_size, after=after, **q.arrays)
    np.testing.assert_array_equal(ops.convert_to_numpy(dequantized), lk.nf4_dequantize(q))
