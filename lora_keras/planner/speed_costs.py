"""What each lever costs in speed, measured: the step time with it over LoRA's without it.

Written by `benchmarks/planner_calibration.py --write` from the committed results (per group:
backend or JAX with XLA / device kind; "qlora" is the mode instead of LoRA). Do not edit by hand.
"""

# SPEED-BEGIN (written by benchmarks/planner_calibration.py --write)
SPEED_COSTS = {
    ("jax", "cpu"): {},
    ("tensorflow", "cpu"): {
        "bfloat16": 0.71,
        "bfloat16+chunked_loss": 0.74,
        "bfloat16+remat+chunked_loss": 1.02,
        "chunked_loss": 1.17,
        "frozen_bfloat16": 0.61,
        "frozen_bfloat16+chunked_loss": 0.7,
        "frozen_bfloat16+remat+chunked_loss": 0.89,
        "qlora": 1.12,
        "remat": 1.23,
        "remat+chunked_loss": 1.44,
        "xla": 0.97,
    },
    ("torch", "cpu"): {},
    ("torch", "gpu"): {"frozen_bfloat16+remat+chunked_loss": 1.74},
}
# SPEED-END
