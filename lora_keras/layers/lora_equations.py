"""Derives the einsum equations of a LoRA update from the wrapped layer's equation."""

import collections

LoraEquations = collections.namedtuple(
    "LoraEquations",
    [
        "base",
        "input_times_a",
        "low_rank_times_b",
        "a_times_b",
        "input_dims",
        "output_dims",
        "output_axes_last",
    ],
)

# Letters tried, in order, for the rank axis: the first one the equation does not use.
_RANK_LETTER_CANDIDATES = "rzyxwvutsqponmlkjihgfedcba"


def split_equation(equation):
    """`(input_spec, kernel_spec, output_spec)` of an `inputs, kernel -> outputs` einsum."""
    inputs_and_kernel, output_spec = equation.replace(" ", "").split("->")
    input_spec, kernel_spec = inputs_and_kernel.split(",")
    return input_spec, kernel_spec, output_spec


def lora_equations(equation, kernel_shape):
    """Splits a projection `inputs, kernel -> outputs` into `A` then `B`.

    For `abc,cde->abde` (GPT-2's query: hidden 768 into 12 heads of 64) with
    rank letter `r` this gives `abc,cr->abr` (inputs times A, `(768, r)`),
    `abr,rde->abde` (then times B, `(r, 12, 64)`) and `cr,rde->cde` (A times B,
    the kernel's shape, for merging). Kernel axes that meet the input are the
    input dims of A; the others are the output dims of B. `output_axes_last`
    says whether those output axes end both the kernel and the outputs, in the
    same order, so that one value per output unit broadcasts onto either.

    Args:
        equation: the wrapped layer's einsum equation, e.g. `"abc,cde->abde"`.
        kernel_shape: the wrapped layer's kernel shape.

    Returns:
        A `LoraEquations` tuple.
    """
    input_spec, kernel_spec, output_spec = split_equation(equation)
    if len(kernel_spec) != len(kernel_shape):
        raise ValueError(
            f"Equation '{equation}' names {len(kernel_spec)} kernel axes but the kernel has "
            f"shape {tuple(kernel_shape)}."
        )
    batched = set(kernel_spec) & set(input_spec) & set(output_spec)
    if batched:
        raise ValueError(
            f"Equation '{equation}' keeps kernel axes {sorted(batched)} in both input and "
            "output (a per-axis projection); LoRA needs a plain projection where every "
            "kernel axis is either contracted with the input or added to the output."
        )
    used = set(equation)
    rank_letter = next(c for c in _RANK_LETTER_CANDIDATES if c not in used)
    contracted = "".join(c for c in kernel_spec if c in input_spec)
    added = "".join(c for c in kernel_spec if c not in input_spec)
    kept = input_spec
    for letter in contracted:
        kept = kept.replace(letter, "")
    dims = dict(zip(kernel_spec, kernel_shape, strict=True))
    return LoraEquations(
        base=f"{input_spec},{kernel_spec}->{output_spec}",
        input_times_a=f"{input_spec},{contracted}{rank_letter}->{kept}{rank_letter}",
        low_rank_times_b=f"{kept}{rank_letter},{rank_letter}{added}->{output_spec}",
        a_times_b=f"{contracted}{rank_letter},{rank_letter}{added}->{kernel_spec}",
        input_dims=tuple(int(dims[c]) for c in contracted),
        output_dims=tuple(int(dims[c]) for c in added),
        output_axes_last=kernel_spec.endswith(added) and output_spec.endswith(added),
    )
