"""NF4 (4-bit NormalFloat) block quantization with double quantization, as in QLoRA.

Dettmers et al. 2023 (QLoRA, section 3 and appendix E): pretrained weights are roughly
normal, so the 16 code values are quantiles of the standard normal scaled to [-1, 1]
(7 negative, an exact zero, 8 positive). A tensor is cut into blocks of 64 values, each
block divided by its absolute maximum and every value stored as the index (4 bits) of its
nearest code value. Double quantization stores the per-block absmax constants themselves
in 8 bits, in groups of 256 after subtracting their mean, with one float32 scale a group.

Quantization runs once, offline, in numpy. Dequantization is written with `keras.ops` so
that the NF4 layers run it on the fly on every backend; `nf4_dequantize` uses the same code.
"""

import dataclasses
import math
import numbers
from statistics import NormalDist

import numpy as np
from keras import ops

from lora_keras.nf4_format import ABSMAX_GROUP_SIZE

# QLoRA's offset: the mean of 1 - 1/(2*15) and 1 - 1/(2*16), so that the extreme
# quantiles are finite and the code book still reaches -1 and 1 once normalized.
_OFFSET = 1.0 - 0.5 * (1.0 / 32.0 + 1.0 / 30.0)


def _nf4_values():
    quantile = NormalDist().inv_cdf
    positive = [quantile(p) for p in np.linspace(_OFFSET, 0.5, 9)[:-1]]  # 8 values
    negative = [-quantile(p) for p in np.linspace(_OFFSET, 0.5, 8)[:-1]]  # 7 values
    values = np.sort(np.array(positive + negative + [0.0]))
    return (values / values.max()).astype("float32")


NF4_VALUES = _nf4_values()
"""The 16 NF4 code values, ascending, from -1.0 to 1.0 with an exact 0.0 at index 7."""

ZERO_CODE = int(np.flatnonzero(NF4_VALUES == 0.0)[0])
# Midpoints between neighbouring code values: a value's code is how many it exceeds.
_BOUNDARIES = (NF4_VALUES[:-1].astype("float64") + NF4_VALUES[1:]) / 2.0
# (256, 2): the two code values one packed byte stands for, high nibble first.
_BYTE_VALUES = np.stack([NF4_VALUES[np.arange(256) >> 4], NF4_VALUES[np.arange(256) & 15]], axis=1)
_INT8_MAX = 127


@dataclasses.dataclass(frozen=True)
class NF4Tensor:
    """A tensor stored as NF4 codes, as `nf4_quantize` returns it.

    Attributes:
        codes: uint8 array, two 4-bit codes a byte (the first in the high nibble).
        shape: the original shape.
        block_size: values per absmax block.
        absmax: float32 absmax a block, or, with double quantization, None.
        absmax_codes: int8 array, the centred absmax constants in 8 bits (double
            quantization), else None.
        absmax_scales: float32, one scale per 256 blocks (double quantization), else None.
        absmax_mean: float32 array of shape `()`, the mean subtracted (double quantization).
    """

    codes: np.ndarray
    shape: tuple
    block_size: int
    absmax: np.ndarray = None
    absmax_codes: np.ndarray = None
    absmax_scales: np.ndarray = None
    absmax_mean: np.ndarray = None

    @property
    def double_quant(self):
        return self.absmax_codes is not None

    @property
    def arrays(self):
        """The stored arrays by name: what a layer keeps as variables."""
        names = ("codes", "absmax_codes", "absmax_scales", "absmax_mean", "absmax")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @property
    def nbytes(self):
        """Bytes stored, every array included."""
        return sum(array.nbytes for array in self.arrays.values())

    @property
    def bits_per_weight(self):
        return 8.0 * self.nbytes / math.prod(self.shape)


def stored_shapes(shape, block_size, double_quant):
    """`{name: (shape, dtype)}` of the arrays `nf4_quantize` stores for a tensor of `shape`."""
    num_blocks = math.ceil(math.prod(shape) / block_size)
    shapes = {"codes": ((num_blocks * block_size // 2,), "uint8")}
    if double_quant:
        shapes["absmax_codes"] = ((num_blocks,), "int8")
        shapes["absmax_scales"] = ((math.ceil(num_blocks / ABSMAX_GROUP_SIZE),), "float32")
        shapes["absmax_mean"] = ((), "float32")
    else:
        shapes["absmax"] = ((num_blocks,), "float32")
    return shapes


def nf4_quantize(x, block_size=64, double_quant=True):
    """Quantizes `x` to NF4 in blocks of `block_size` values (QLoRA's storage).

    Each value is stored as the NF4 code whose value, times its block's stored
    absmax, is nearest to it. With double quantization the stored absmax is the
    8-bit one, so codes are chosen against the scale that dequantization will use.
    The 8-bit absmax constants are linear int8 (bitsandbytes uses a dynamic 8-bit
    float map): the same storage, 8 bits a constant.

    Args:
        x: a float array of any shape.
        block_size: values per block; even, at least 2.
        double_quant: quantize the absmax constants to 8 bits (about 4.127 bits a
            weight in total, instead of 4.5).

    Returns:
        An `NF4Tensor`; `nf4_dequantize` turns it back into a float32 array.

    Example:
    ```python
    q = lk.nf4_quantize(np.random.normal(size=(768, 2304)))
    q.bits_per_weight  # about 4.127
    lk.nf4_dequantize(q).shape  # (768, 2304)
    ```
    """
    if not isinstance(block_size, numbers.Integral) or block_size < 2 or block_size % 2:
        raise ValueError(
            f"block_size must be an even integer of at least 2 (two codes a byte), "
            f"got {block_size!r}."
        )
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(
            f"Cannot quantize an array of dtype {x.dtype} to NF4: give real numbers (a float "
            "kernel); NF4 has no complex or non-numeric codes."
        )
    if x.size == 0:
        raise ValueError(
            f"Cannot quantize an empty array (shape {x.shape}) to NF4: there is no value to scale "
            "a block by. Give an array with at least one value."
        )
    x = x.astype("float64")
    if not np.isfinite(x).all():
        raise ValueError("Cannot quantize to NF4: the tensor has NaN or infinite values.")
    shape = tuple(int(d) for d in x.shape)
    blocks = _blocks(x, block_size)  # (num_blocks, block_size), zero padded
    absmax = np.abs(blocks).max(axis=1).astype("float32")
    stored = {"absmax": absmax}
    if double_quant:
        stored = _quantize_absmax(absmax)
    scale = ops.convert_to_numpy(stored_absmax(**stored)).astype("float64")
    codes = _nearest_codes(blocks, scale)
    packed = (codes[:, 0::2] << 4 | codes[:, 1::2]).astype("uint8").reshape(-1)
    return NF4Tensor(codes=packed, shape=shape, block_size=int(block_size), **stored)


def _blocks(x, block_size):
    flat = x.reshape(-1)
    padding = -flat.size % block_size
    return np.pad(flat, (0, padding)).reshape(-1, block_size)


def _quantize_absmax(absmax):
    mean = absmax.mean(dtype="float64").astype("float32")
    centred = _blocks(absmax - mean, ABSMAX_GROUP_SIZE)  # (groups, 256)
    scales = (np.abs(centred).max(axis=1) / _INT8_MAX).astype("float32")
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    codes = np.clip(np.rint(centred / safe), -_INT8_MAX, _INT8_MAX).astype("int8")
    return {
        "absmax_codes": codes.reshape(-1)[: absmax.size],
        "absmax_scales": scales,
        "absmax_mean": np.asarray(mean, dtype="float32"),
    }


def _nearest_codes(blocks, scale):
    """The code of each value: nearest to `value / scale`, clipped to the code book."""
    safe = np.where(scale != 0, scale, 1.0)[:, None]
    normalized = np.clip(blocks / safe, -1.0, 1.0)
    codes = np.searchsorted(_BOUNDARIES, normalized, side="left")
    # A block whose stored scale is 0 can only hold zeros.
    return np.where(scale[:, None] != 0, codes, ZERO_CODE).astype("uint8")


def stored_absmax(absmax=None, absmax_codes=None, absmax_scales=None, absmax_mean=None):
    """The absmax a block as dequantization uses it, float32, with `keras.ops`."""
    if absmax is not None:
        return ops.convert_to_tensor(absmax, dtype="float32")
    num_blocks = absmax_codes.shape[0]
    scales = ops.repeat(ops.convert_to_tensor(absmax_scales, "float32"), ABSMAX_GROUP_SIZE)
    centred = ops.cast(absmax_codes, "float32") * scales[:num_blocks]
    return centred + ops.convert_to_tensor(absmax_mean, "float32")


def waiting_for(codes, tensor):
    """`codes` unchanged, but computed from `tensor` too, so not before `tensor` exists.

    A graph executor (TensorFlow's) runs an op as soon as its inputs exist. Codes
    read from variables exist at the start of a step, so every layer's kernel would
    be dequantized at once, up front, and kept until its matmul; and the backward
    pass's dequantization, the same ops on the same inputs, may be merged with the
    forward one (common subexpression elimination), keeping every float kernel from
    the forward pass to the backward. Adding a zero computed from the layer's input
    (or upstream gradient) makes each dequantization wait for its matmul's operand.
    """
    # Nothing compares greater than itself, NaN included, so the zero is exact; a float
    # comparison of a value with itself is not folded away (NaN would make that unsafe).
    # One slice of the last axis keeps its cost to a few hundred comparisons.
    probe = tensor[..., :1]
    return ops.add(codes, ops.cast(ops.any(ops.greater(probe, probe)), codes.dtype))


def dequantize_arrays(shape, block_size, codes, dtype="float32", after=None, **absmax_arrays):
    """Rebuilds the float tensor from stored NF4 arrays, with `keras.ops` only.

    Args:
        shape: the original shape.
        block_size: values per block.
        codes: the packed uint8 codes (a tensor or a variable).
        dtype: the dtype of the result (the layer's compute dtype).
        after: a tensor to wait for (see `waiting_for`), or None.
        **absmax_arrays: `absmax`, or `absmax_codes`, `absmax_scales`, `absmax_mean`.
    """
    if after is not None:
        codes = waiting_for(codes, after)
    # One gather from a byte's two code values, high nibble first: fewer temporaries than
    # unpacking the nibbles, then looking each up.
    pairs = ops.take(ops.convert_to_tensor(_BYTE_VALUES), ops.cast(codes, "int32"), axis=0)
    values = ops.reshape(pairs, (-1, block_size))  # (num_blocks, block_size)
    scaled = values * ops.expand_dims(stored_absmax(**absmax_arrays), 1)
    flat = ops.reshape(scaled, (-1,))[: math.prod(shape)]
    return ops.cast(ops.reshape(flat, shape), dtype)


def nf4_dequantize(q):
    """Returns the float32 numpy array an `NF4Tensor` stands for."""
    tensor = dequantize_arrays(q.shape, q.block_size, **q.arrays)
    return ops.convert_to_numpy(tensor)
