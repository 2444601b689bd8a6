"""The LoRA equations with one adapter per example: A and B gain the batch axis."""

import collections

from lora_keras.layers.lora_equations import lora_equations, split_equation

MultiLoraEquations = collections.namedtuple(
    "MultiLoraEquations", ["single", "input_times_a", "low_rank_times_b", "batch_letter"]
)

# Letters tried, in order, for a batch axis the equation writes as `...`.
_BATCH_LETTER_CANDIDATES = "bnmlkjihgfedcazyxwvutsqpo"


def _with_batch(equation, letter):
    """`equation` with `letter` leading every operand that lacks it."""
    left, right = equation.split("->")
    operands = [o if o.startswith(letter) else letter + o for o in left.split(",")]
    return f"{','.join(operands)}->{right if right.startswith(letter) else letter + right}"


def multi_lora_equations(equation, kernel_shape):
    """The LoRA equations of `equation`, with A and B gathered per example.

    The wrapped layer's input and output lead with the batch axis (the first
    letter of both, as in GPT-2's `abc,cde->abde`; for `...i,io->...o` a new
    letter is put before the `...`). A stacked `(adapters, *input_dims, rank)`
    taken at each example's adapter id is `(batch, *input_dims, rank)`: the
    batch letter joins A's and B's specs, so `abc,cr->abr` becomes
    `abc,acr->abr` and `abr,rde->abde` becomes `abr,arde->abde`.

    Args:
        equation: the wrapped layer's einsum equation.
        kernel_shape: the wrapped layer's kernel shape.

    Returns:
        A `MultiLoraEquations`: `single` (the `LoraEquations` of one adapter,
        for its shapes and for saving), the two batched equations, and the
        batch letter.
    """
    single = lora_equations(equation, kernel_shape)
    input_spec, kernel_spec, output_spec = split_equation(single.base)
    if input_spec.startswith("..."):
        used = set(single.input_times_a + single.low_rank_times_b)
        letter = next(c for c in _BATCH_LETTER_CANDIDATES if c not in used)
    else:
        letter = input_spec[0]
        if not output_spec.startswith(letter) or letter in kernel_spec:
            raise ValueError(
                f"Equation '{equation}' does not lead its input and output with a batch axis; "
                "one adapter per example needs one (as every GPT-2 projection has)."
            )
    return MultiLoraEquations(
        single,
        _with_batch(single.input_times_a, letter),
        _with_batch(single.low_rank_times_b, letter),
        letter,
    )
