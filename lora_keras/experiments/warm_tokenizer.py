"""`python -m lora_keras.experiments.warm_tokenizer PRESET DATA TEXT_FIELD`: trains and caches
the tokenizer of a random-weights comparison, in a process of its own.

KerasHub, which builds the tokenizer, starts TensorFlow (seconds, and start-up notices); run
here, it leaves the comparing process free of both (`compare.warm_tokenizer_cache`).
"""

import sys

from lora_keras.experiments.compare import train_tokenizer


def main(argv=None):
    preset, data, text_field = argv or sys.argv[1:]
    train_tokenizer(preset, data, text_field)
    return 0


if __name__ == "__main__":
    sys.exit(main())
