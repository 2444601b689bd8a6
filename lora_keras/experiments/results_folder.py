"""The folder a comparison writes into: always new, never one that exists."""

import datetime
import os
import secrets

DEFAULT_RESULTS_ROOT = "lora-keras-results"


def new_results_folder(out, kind):
    """Creates a new folder, exclusively: one that exists (even empty) is never reused.

    The default name adds this process's id and a random suffix to the time, so that two
    comparisons started in the same second (two terminals, a notebook, a workshop's shared
    folder) never share a folder or a run's files.
    """
    for _ in range(100):
        if out is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{kind}-{stamp}-{os.getpid()}-{secrets.token_hex(2)}"
            folder = os.path.join(DEFAULT_RESULTS_ROOT, name)
        else:
            folder = os.fspath(out)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
            os.mkdir(folder)  # exclusive: fails if the folder exists, whoever made it
            return folder
        except FileExistsError as error:
            if out is not None and os.path.isdir(folder):
                raise _exists(folder) from error
            if out is not None:
                raise _unwritable(folder, error) from error
        except OSError as error:
            raise _unwritable(folder, error) from error
    raise FileExistsError(f"Could not find a free folder name under {DEFAULT_RESULTS_ROOT}.")


def check_new_folder(out):
    """Refuses an `out` that exists (a folder or a file) or lies under a file, at once.

    Called before anything slow (TensorFlow, a tokenizer), so that the refusal is immediate;
    `new_results_folder` still creates the folder exclusively, whoever comes in between.
    """
    if out is None:
        return
    folder = os.fspath(out)
    if os.path.isdir(folder):
        raise _exists(folder)
    if os.path.lexists(folder):
        raise ValueError(
            f"Cannot create the results folder '{folder}': a file of that name exists. Choose "
            "a new --out folder (out=...)."
        )
    above = os.path.dirname(os.path.abspath(folder))
    while not os.path.lexists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise ValueError(
            f"Cannot create the results folder '{folder}': '{above}' is a file, not a folder. "
            "Choose a writable place with --out (out=...)."
        )


def _exists(folder):
    return FileExistsError(
        f"'{folder}' already exists. Choose a new --out folder (out=...); lora-keras never "
        "writes into an existing folder, so a report holds only its own runs."
    )


def _unwritable(folder, error):
    return ValueError(
        f"Cannot create the results folder '{folder}': {error.strerror}. Choose a writable "
        "place with --out (out=...)."
    )
