"""DataLoader worker processes for image folders (issue 16): on by default, the same batches as
decoding in this process, no signal handler left behind, a file that fails to decode named; and
the crash that had kept workers opt-in is gone.

That crash: every ov.Core loads its own CPU plugin instance, and each instance swaps in its own
signal stack (sigaltstack) for the thread that created it. Two destroyed out of order leave the
thread's signal stack pointing at unmapped memory. Nothing notices until a signal with a Python
handler arrives on that thread: torch's DataLoader had installed one for SIGCHLD (for good), so
the next child process to exit killed the process with SIGSEGV (si_code SI_KERNEL: the kernel
could not write the signal frame), or, if the pages had been reused, corrupted the heap. edgekit
now compiles every IR through one Core, and puts torch's SIGCHLD handler back after training.
The checks that need a crash to fail run in a child Python, so a regression fails the test
rather than the test session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import DataError
from edgekit.spec import InputSpec

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]

# The calling thread's signal stack and whether its pages are mapped (read in a child Python).
PROBE = textwrap.dedent('''
    import ctypes

    class _Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    _libc = ctypes.CDLL(None, use_errno=True)

    def signal_stack():
        """(address, size, mapped): mapped is None when no signal stack is set."""
        s = _Stack()
        assert _libc.sigaltstack(None, ctypes.byref(s)) == 0
        if s.flags & 2 or not s.sp:  # SS_DISABLE
            return 0, 0, None
        with open("/proc/self/maps") as maps:
            spans = [[int(v, 16) for v in line.split()[0].split("-")] for line in maps]
        mapped = any(lo <= s.sp and s.sp + s.size <= hi for lo, hi in spans)
        return s.sp, s.size, mapped
''')


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(PROBE + textwrap.dedent(code))
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]), "EDGEKIT_NO_PROGRESS": "1", **env}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=environ)


def _folder(root: Path, classes=("a", "b", "c"), n: int = 6, size=(30, 34)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 80, size, dtype=np.uint8) + np.uint8(60 * k)
            Image.fromarray(img, "L").save(root / c / f"{i}.png")
    return root


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps (Linux)")
def test_the_probe_sees_a_signal_stack_that_was_unmapped(tmp_path: Path) -> None:
    """The probe the next tests rely on tells a live signal stack from an unmapped one."""
    proc = run_python('''
        import mmap
        buf = mmap.mmap(-1, 65536)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        old = _Stack()
        new = _Stack(addr, 0, 65536)
        assert _libc.sigaltstack(ctypes.byref(new), ctypes.byref(old)) == 0
        print("live", signal_stack()[2])
        raw = ctypes.c_void_p(addr)
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        assert _libc.munmap(raw, 65536) == 0  # gone under the signal stack, as OpenVINO left it
        print("unmapped", signal_stack()[2])
        _libc.sigaltstack(ctypes.byref(old), None)
    ''', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["live", "True", "unmapped", "False"]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps (Linux)")
def test_openvino_models_freed_in_any_order_leave_a_live_signal_stack(tmp_path: Path) -> None:
    """Two IRs compiled by edgekit and freed in the order that broke it (the first one first),
    then a Python SIGCHLD handler and child processes, as after a DataLoader: no crash, and the
    thread's signal stack is mapped memory."""
    pytest.importorskip("openvino", reason="OpenVINO not installed")
    proc = run_python('''
        import gc, signal, subprocess
        import numpy as np
        import openvino as ov
        from edgekit.runtimes.openvino import compile_ir

        for name in ("a", "b"):
            x = ov.opset13.parameter([1, 4], np.float32)
            ov.save_model(ov.Model([ov.opset13.relu(x)], [x]), name + ".xml")
        first = compile_ir("a.xml")
        second = compile_ir("b.xml")
        del first
        gc.collect()
        del second
        gc.collect()
        print("mapped", signal_stack()[2])
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for _ in range(3):
            subprocess.run(["true"], check=True)
        print("survived")
    ''', tmp_path)
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.split() in (["mapped", "True", "survived"], ["mapped", "None", "survived"])


def test_training_with_workers_gives_the_batches_of_one_process(tmp_path: Path,
                                                                monkeypatch) -> None:
    """Workers are the default; they give the same batches in the same order as decoding in
    this process (the same weights after an epoch), and leave no SIGCHLD handler behind."""
    from edgekit.data import load_dataset, load_raw
    from edgekit.data.loader import default_workers
    from edgekit.zoo.train import TrainConfig, fit

    spec = InputSpec(shape=(1, 1, 24, 24), mean=(0.4,), std=(0.3,), resize=26)
    root = _folder(tmp_path / "imgs")
    raw, eval_set = load_raw(str(root)), load_dataset(str(root), spec)
    before = signal.getsignal(signal.SIGCHLD)
    weights, histories = [], []
    for workers in (None, "0"):
        if workers is None:
            monkeypatch.delenv("EDGEKIT_DATA_WORKERS", raising=False)
            assert default_workers() >= 1
        else:
            monkeypatch.setenv("EDGEKIT_DATA_WORKERS", workers)
            assert default_workers() == 0
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(4, 3))
        history = fit(model, raw, spec, eval_set,
                      TrainConfig(epochs=2, batch_size=4, lr=0.02, warmup_epochs=0, seed=3))
        weights.append([p.detach().clone() for p in model.parameters()])
        histories.append([e["loss"] for e in history["epochs"]])
        assert signal.getsignal(signal.SIGCHLD) == before  # torch's handler did not outlive fit
    assert histories[0] == histories[1]
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    monkeypatch.setenv("EDGEKIT_DATA_WORKERS", "two")
    with pytest.raises(DataError, match="EDGEKIT_DATA_WORKERS"):
        default_workers()


def test_a_file_that_fails_to_decode_in_a_worker_is_named(tmp_path: Path, monkeypatch) -> None:
    """A truncated PNG passes the header check and fails only when a worker decodes it: the
    training run stops with edgekit's DataError naming the file, not a worker traceback."""
    from edgekit.data import load_raw
    from edgekit.zoo.train import TrainConfig, fit

    monkeypatch.setenv("EDGEKIT_DATA_WORKERS", "1")
    root = _folder(tmp_path / "imgs", n=3)
    broken = root / "b" / "1.png"
    broken.write_bytes(broken.read_bytes()[:80])
    spec = InputSpec(shape=(1, 1, 24, 24), mean=(0.4,), std=(0.3,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(24 * 24, 3))
    before = signal.getsignal(signal.SIGCHLD)
    with pytest.raises(DataError, match=r"cannot decode image .*b/1\.png") as err:
        fit(model, load_raw(str(root)), spec, None, TrainConfig(epochs=1, batch_size=4))
    assert err.value.hint == "remove or replace the file"
    assert "Traceback" not in str(err.value)
    assert signal.getsignal(signal.SIGCHLD) == before


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps (Linux)")
def test_train_with_workers_then_openvino_then_child_processes(tmp_path: Path,
                                                               quick_profile) -> None:
    """The sequence that crashed, in one process with workers on: compress with distillation
    from an image folder (DataLoader workers), int8 from the folder, export OpenVINO, validate on
    ONNX Runtime and OpenVINO, then child processes under a Python SIGCHLD handler."""
    pytest.importorskip("openvino", reason="OpenVINO not installed")
    # lenet5 records the Fashion-MNIST class names: classes named by output index (issue 25)
    root = _folder(tmp_path / "imgs", classes=("0_a", "1_b", "2_c"), size=(28, 28))
    profile = quick_profile(runtimes={"onnxruntime": {"precisions": ["fp32", "int8"]},
                                      "openvino": {"precisions": ["fp32"]}})
    proc = run_python(f'''
        import signal, subprocess, sys
        import edgekit
        from edgekit.zoo import shipped_checkpoint

        folder, out = {str(root)!r}, "out"
        result = edgekit.compress(shipped_checkpoint("lenet5"), out,
                                  steps={{"prune": {{"ratio": 0.25}},
                                         "distill": {{"epochs": 1, "batch_size": 6}},
                                         "quantize": {{"calib_size": 9}}}},
                                  data={{"train": folder, "eval": folder, "calib": folder}},
                                  budget={{"max_drop": 100}})
        print("steps", ",".join(result.steps))
        print("sigchld", signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL)
        edgekit.export(out, target="openvino", precision="fp32", data={{"eval": folder}})
        report = edgekit.validate(out, data=folder, device={profile!r},
                                  budget={{"max_drop": 100.0}})
        print("runtimes", ",".join(sorted({{r["runtime"] for r in report.records}})))
        print("mapped", signal_stack()[2])
        signal.signal(signal.SIGCHLD, lambda *_: None)  # as torch's DataLoader had left it
        for _ in range(3):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        print("survived")
    ''', tmp_path, EDGEKIT_DATA_WORKERS="1")
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-3000:]}"
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["steps"] == "prune,distill,quantize"
    assert lines["sigchld"] == "True"
    assert lines["runtimes"] == "onnxruntime,openvino"
    assert lines["mapped"] in ("True", "None")
    assert proc.stdout.splitlines()[-1] == "survived"
