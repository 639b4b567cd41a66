"""Process-wide state stays as the caller left it: quiet_library silences one library (its log
records, what the calling thread prints) and nothing else, and device profile folders follow the
working directory of the call, not of the import. (The torch runner's thread count is checked in
test_torch_runner.py.)"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import yaml

from edgekit.devices import SHIPPED_PROFILES, find_profile, list_profiles, load_profile
from edgekit.quiet import quiet_library


def test_only_the_library_and_this_thread_are_silenced(capsys, caplog) -> None:
    caplog.set_level(logging.INFO)
    stdout = sys.stdout
    with quiet_library("onnxruntime"):
        logging.getLogger("onnxruntime.quantization.shape_inference").warning("ort warning")
        logging.getLogger("onnxruntime").error("ort error")
        logging.getLogger("edgekit.someone").warning("our warning")
        print("printed by the library, in this thread")
        other = threading.Thread(target=lambda: print("printed by another thread"))
        other.start()
        other.join()
    assert sys.stdout is stdout
    out = capsys.readouterr().out
    assert out == "printed by another thread\n"
    messages = [r.getMessage() for r in caplog.records]
    assert "ort warning" not in messages
    assert "ort error" in messages and "our warning" in messages
    logging.getLogger("onnxruntime").warning("after the block")
    assert caplog.records[-1].getMessage() == "after the block"
    assert logging.root.manager.disable == logging.NOTSET  # nothing disabled process-wide


def test_profile_folders_are_looked_up_when_asked(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "devices").mkdir()
    mine = tmp_path / "devices" / "bench-box.yaml"
    mine.write_text(yaml.safe_dump({"name": "bench-box", "kind": "cpu",
                                    "runtimes": {"onnxruntime": {}}}))
    assert load_profile("bench-box", cwd=tmp_path).name == "bench-box"
    assert "bench-box" not in {p.stem for p in list_profiles()}  # not from this folder
    monkeypatch.chdir(tmp_path)  # edgekit.devices was imported long before
    assert find_profile("bench-box") == mine
    assert "bench-box" in {p.stem for p in list_profiles()}
    assert find_profile("local-cpu") == SHIPPED_PROFILES / "local-cpu.yaml"
