"""The child process of a comparison: `python -m lora_keras.experiments.run_child SPEC RESULT`.

Kept apart from `train_one` so that the package's `__init__` never imports the
module that `-m` runs (which would run it twice).
"""

import json
import sys

from lora_keras.experiments.train_one import train_one
from lora_keras.io_utils import atomic_write_json


def main(argv=None):
    spec_path, result_path = argv or sys.argv[1:]
    with open(spec_path) as file:
        spec = json.load(file)
    atomic_write_json(result_path, train_one(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
