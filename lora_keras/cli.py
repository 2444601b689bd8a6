"""The `lora-keras` command line."""

import argparse

from lora_keras import __version__


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lora-keras")
    parser.add_argument("--version", action="version", version=f"lora-keras {__version__}")
    parser.parse_args(argv)
    return 0
