import json
import os

import pytest

from lora_keras.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_bytes_text_and_json(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a.md", "héllo")
    atomic_write_json(tmp_path / "a.json", {"runs": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "a.json").read_text()) == {"runs": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "a.json", "a.md"]


def test_replaces_an_existing_file(tmp_path):
    atomic_write_text(tmp_path / "report.md", "old")
    atomic_write_text(tmp_path / "report.md", "new")
    assert (tmp_path / "report.md").read_text() == "new"


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def fail(fd):
        raise OSError("disk full")

    # fsync runs after the data is written to the temporary file, before the rename.
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_an_unserializable_object_leaves_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == "old"


def test_a_folder_in_place_of_the_file_is_refused_by_its_name(tmp_path):
    (tmp_path / "adapter").mkdir()
    with pytest.raises(IsADirectoryError, match=r"Cannot write '.*adapter': it is a folder\."):
        atomic_write_bytes(tmp_path / "adapter", b"x")
    assert os.listdir(tmp_path / "adapter") == [] and os.listdir(tmp_path) == ["adapter"]
