"""Human-readable bytes and shares, units chosen from the data (for the estimate and reports)."""

_BYTE_UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024), ("bytes", 1))


def byte_unit(largest):
    """Return `(name, bytes per unit)` of the largest binary unit not exceeding `largest` bytes.

    Example: `byte_unit(5e9)` is `("GiB", 1073741824)`; an axis divides every value by it.
    """
    for name, size in _BYTE_UNITS:
        if largest >= size:
            return name, size
    return _BYTE_UNITS[-1]


def format_bytes(value):
    """Format a byte count with its own unit: `format_bytes(5 * 1024**3)` is `"5.00 GiB"`."""
    name, size = byte_unit(value)
    if size == 1:
        return f"{int(value)} bytes"
    return f"{value / size:.2f} {name}"


def format_share(part, whole):
    """Format `part` as a percentage of `whole`, with 3 significant digits: small shares (a LoRA
    adapter's 0.118% of the weights) would read 0% with fixed decimals."""
    return f"{100 * part / whole:.3g}%"


def format_seconds(value):
    """`12.3 ms` under a second, `2.35 s` from one: a GPU step and a CPU step both readable."""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
