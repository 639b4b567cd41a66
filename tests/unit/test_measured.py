"""edgekit.zoo.measured: what this machine measured once, keyed by what it depends on."""

from __future__ import annotations

import json

from edgekit.zoo.measured import PLANS_FILE, recall, remember


def test_an_entry_comes_back_under_its_key_in_any_order(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    key = {"machine": "cpu X", "threads": 2, "torch": "2.14.1"}
    assert recall(key) is None
    remember(key, {"precision": "fp32", "images_per_s": 40.5})
    again = recall({"torch": "2.14.1", "threads": 2, "machine": "cpu X"})
    assert again == {"precision": "fp32", "images_per_s": 40.5, "key": key}
    assert recall({**key, "threads": 1}) is None  # another thread count measures again


def test_entries_of_other_keys_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    remember({"a": 1}, {"v": 1})
    remember({"a": 2}, {"v": 2})
    assert recall({"a": 1})["v"] == 1 and recall({"a": 2})["v"] == 2
    assert not list(tmp_path.glob(f".{PLANS_FILE}.*"))  # no temporary file left


def test_a_damaged_file_reads_as_empty_and_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    (tmp_path / PLANS_FILE).write_text("{not json")
    assert recall({"a": 1}) is None
    remember({"a": 1}, {"v": 1})
    assert json.loads((tmp_path / PLANS_FILE).read_text())[json.dumps({"a": 1})]["v"] == 1
