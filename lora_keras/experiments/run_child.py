"""The child process of a comparison: `python -m lora_keras.experiments.run_child JOB RESULT`.

JOB is the `runs/NAME.spec.json` the parent wrote (`job_file.job_json`): the experiment's
`RunSpec` and this child's `PlannedRun`, read back (and checked) through those dataclasses.

Kept apart from `train_one` so that the package's `__init__` never imports the
module that `-m` runs (which would run it twice).
"""

import contextlib
import json
import sys

from lora_keras.experiments.job_file import read_job
from lora_keras.experiments.train_one import train_one
from lora_keras.io_utils import atomic_write_json


def _data_parallel_scope(spec):
    """`lk.data_parallel()` over every visible device when the `RunSpec` asks for it."""
    if not spec.data_parallel:
        return contextlib.nullcontext(), 1
    from lora_keras.distribution import data_parallel, data_parallel_devices

    devices = data_parallel_devices()
    if spec.batch_size % len(devices):
        raise ValueError(
            f"batch_size={spec.batch_size} cannot be split evenly over {len(devices)} "
            "devices: give a global batch size that is a multiple of the number of devices."
        )
    return data_parallel(devices), len(devices)


def main(argv=None):
    spec_path, result_path = argv or sys.argv[1:]
    with open(spec_path) as file:
        spec, run = read_job(json.load(file))  # checked again, as the parent did
    scope, devices = _data_parallel_scope(spec)
    with scope:
        record = train_one(spec, run)
    record["data_parallel_devices"] = devices
    atomic_write_json(result_path, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
