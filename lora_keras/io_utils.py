"""Write files whole or not at all.

A comparison can be killed mid-run (out of memory, a Colab timeout, Ctrl-C). If it dies while
writing `results.json`, an adapter, or `report.md`, a reader must find either the old file or the
new one, never half of one. So every writer here writes a temporary file in the same folder (the
same file system, so the rename is atomic) and then `os.replace`s it over the target.
"""

import json
import os
import uuid


def atomic_write_bytes(path, data):
    """Write `data` (bytes) to `path` atomically; on any failure the old file is left intact.

    Args:
        path: the file to (re)write. Its folder must exist.
        data: the bytes to write.

    Example:

    ```python
    atomic_write_bytes("out/plot.png", png_bytes)
    ```
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"Cannot write '{path}': it is a folder. Give the path of a file, for example "
            f"'{os.path.join(path, 'adapter.lora.h5')}'."
        )
    folder, name = os.path.split(os.path.abspath(path))
    temp_path = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # `os.open` with an explicit mode lets the umask apply as for any new file (unlike
    # `tempfile`, which makes files only their owner can read); O_EXCL refuses to reuse a name.
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot write '{path}': the folder '{folder}' does not exist. Create it first."
        )
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            # Without fsync a power cut after the rename can leave an empty file in its place.
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    """Write `text` to `path` atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically (see `atomic_write_bytes`).

    The object is serialized before anything touches the disk, so an object JSON cannot encode
    raises `TypeError` and leaves the old file as it was.
    """
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
