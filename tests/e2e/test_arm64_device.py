"""An emulated arm64 (Jetson-class) device over SSH (issue 20): Debian's aarch64 Python 3.11 under
qemu-user with PyPI's aarch64 numpy and onnxruntime 1.19.2 (older than the workstation's), built
by scripts/arm64-device.sh and served by the loopback sshd of the tests (tests/sshd.py).

Covers: the seed model's fp32 and int8 artifacts validated there and here give the same top-1
(records say aarch64, the device's Python and runtime, emulated, latency not representative);
an artifact newer than the device's runtime refused before anything is copied, with the fix;
a device Python that cannot start (emulator missing, sysroot incomplete, a missing library);
a device without numpy or onnxruntime (the fix is the aarch64 install command)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.data.given import DataSources
from edgekit.executors import ValidationJob
from tests.helpers import edgekit
from tests.sshd import LoopbackSSHD, serve_module_sshd

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "arm64-device.sh"
LENET5 = ROOT / "edgekit" / "_data" / "zoo" / "lenet5.pt"
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"
EVAL = "fashion-mnist:test"
EVAL_LIMIT = 1000  # a stratified subset of the test set: the emulator runs ~10x slower


# ------------------------------------------------------------------------------ fixtures
def top1_tolerance(precision: str) -> float:
    """How far the emulated arm64 device's top-1 may be from this machine's on the same
    artifact and images: 0.1 point, except int8 on an x86 CPU without VNNI, whose ONNX Runtime
    int8 kernels sum u8 x s8 pairs in 16 bits (vpmaddubsw) and saturate where ARM's dot
    products do not (ONNX Runtime's reduce_range exists for such CPUs): 2 points there."""
    from edgekit.validate.env import cpu_info

    cpu = cpu_info()
    if precision == "int8" and cpu["arch"] == "x86_64" and not cpu["vnni"]:
        return 0.02
    return 0.001


@pytest.fixture(scope="session")
def arm64_python(tmp_path_factory) -> Path:
    """The emulated device's python (scripts/arm64-device.sh): built once and cached under
    $EDGEKIT_CACHE/arm64-device (CI builds it in .ci/run; here it is built when missing)."""
    can_install = os.geteuid() == 0 or shutil.which("sudo")
    if not shutil.which("qemu-aarch64-static") and not (shutil.which("apt-get") and can_install):
        pytest.skip("needs qemu-user-static (apt-get install qemu-user-static) to emulate arm64")
    prefix = tmp_path_factory.mktemp("arm64-device")
    proc = subprocess.run(["bash", str(SCRIPT), "--prefix", str(prefix), "--edgekit", str(ROOT),
                           "--profile-out", str(prefix / "profile.yaml")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return prefix / "python"


sshd = pytest.fixture(scope="module", name="sshd")(serve_module_sshd)


def arm64_profile(sshd: LoopbackSSHD, python: Path | str, workdir: Path):
    """The shipped emulated-arm64 template, pointed at the loopback sshd and the built device."""
    from edgekit.devices import DeviceProfile, load_profile

    data = load_profile("emulated-arm64").model_dump(exclude_defaults=True)
    data.update(python=str(python), workdir=str(workdir), **sshd.profile_fields())
    return DeviceProfile.model_validate(data)


@pytest.fixture(scope="module")
def lenet5_out(tmp_path_factory) -> Path:
    """The seed LeNet-5 (shipped checkpoint) exported to fp32 ONNX and quantized to int8."""
    out = tmp_path_factory.mktemp("lenet5") / "out"
    proc = edgekit("compress", str(LENET5), "--int8", "--calib", str(CALIB), "--calib-size", "256",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


# --------------------------------------------------------------------------------- tests
def test_seed_model_on_emulated_arm64_matches_local(sshd, arm64_python, lenet5_out, tmp_path):
    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob
    from edgekit.remote import validate_remote
    from edgekit.results.table import EMULATED_MARK, gate_row
    from edgekit.validate.validator import validate

    profile = arm64_profile(sshd, arm64_python, tmp_path / "device")
    result = validate_remote(ValidationJob(target=lenet5_out, device=profile,
                                           data=DataSources(eval=EVAL, eval_limit=EVAL_LIMIT)),
                             poll_s=1.0)
    assert result.job_state == "complete", result.partial_reason
    assert [r["precision"] for r in result.records] == ["fp32", "int8"]
    device = result.device_report
    assert device["environment"]["machine"] == "aarch64"
    assert device["python"]["version"].startswith("3.11.")
    ort = device["runtimes"]["onnxruntime"]
    assert ort["version"] == "1.19.2"
    assert ort["capabilities"]["max_ir_version"] == 10
    assert ort["capabilities"]["max_opset"][""] == 21
    for record in result.records:
        env = record["environment"]
        assert env["cpu"]["arch"] == "aarch64" and env["python"] == device["python"]["version"]
        assert env["versions"]["onnxruntime"] == "1.19.2"
        assert record["emulated"] is True
        assert record["latency"]["representative"] is False
        assert "emulator" in record["latency"]["note"]
        assert record["accuracy"]["eval_sample"]["count"] == EVAL_LIMIT
        assert record["remote"]["machine"] == "aarch64" and record["remote"]["emulated"] is True
        cells = gate_row(record)
        assert cells[8].endswith(EMULATED_MARK) and cells[14] == "emulated"

    # The same artifacts on this machine's x86 onnxruntime, on the same images.
    local_profile = profile.model_copy(update={"host": None, "emulated": False})
    local = validate(ValidationJob(target=lenet5_out, device=local_profile,
                                   data=DataSources(eval=EVAL, eval_limit=EVAL_LIMIT)))
    import onnxruntime

    assert onnxruntime.__version__ != "1.19.2"
    for arm, x86 in zip(result.records, local.records, strict=True):
        assert arm["precision"] == x86["precision"]
        assert arm["artifact_sha256"] == x86["artifact_sha256"]
        assert abs(arm["accuracy"]["top1"] - x86["accuracy"]["top1"]) \
            <= top1_tolerance(arm["precision"]), (arm["precision"], arm["accuracy"]["top1"],
                                                  x86["accuracy"]["top1"])
        assert 0.8 < arm["accuracy"]["top1"] < 0.95
        assert "emulated" not in x86 and "representative" not in x86["latency"]
    # The CLI, on the same device: it collects the same job (nothing measured twice), with the
    # same records.
    import json

    import yaml

    path = tmp_path / "arm64.yaml"
    path.write_text(yaml.safe_dump(profile.model_dump(mode="json", exclude_defaults=True)))
    cli = edgekit("validate", str(lenet5_out), "--device", str(path), "--eval", EVAL,
                  "--limit", str(EVAL_LIMIT), "--json")
    assert cli.returncode == 0, cli.stderr
    assert "already ran" in cli.stderr
    records = json.loads(cli.stdout)["records"]
    assert [(r["record_key"], r["emulated"], r["accuracy"]["top1"]) for r in records] == \
        [(r["record_key"], True, r["accuracy"]["top1"]) for r in result.records]
    print("top-1 arm64/x86:", [(r["precision"], r["accuracy"]["top1"]) for r in result.records],
          [(r["precision"], r["accuracy"]["top1"]) for r in local.records])


@pytest.mark.parametrize("name", ["rowrnn", "cnn_gru", "cnn_lstm"])
def test_other_seed_models_on_emulated_arm64_match_local(sshd, arm64_python, name, tmp_path):
    """The recurrent seed models too (fp32 and int8): the same top-1 on the emulated aarch64
    onnxruntime 1.19.2 as on this machine's, on the same 100 images (fewer than lenet5's 1,000:
    the emulator runs the recurrent graphs slowly)."""
    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob
    from edgekit.remote import validate_remote
    from edgekit.validate.validator import validate

    out = tmp_path / "out"
    checkpoint = ROOT / "edgekit" / "_data" / "zoo" / f"{name}.pt"
    proc = edgekit("compress", str(checkpoint), "--int8", "--calib", str(CALIB), "--calib-size",
                   "128", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    profile = arm64_profile(sshd, arm64_python, tmp_path / "device")
    result = validate_remote(ValidationJob(target=out, device=profile,
                                           data=DataSources(eval=EVAL, eval_limit=100)), poll_s=1.0)
    assert result.job_state == "complete", result.partial_reason
    local = validate(ValidationJob(target=out, device=profile.model_copy(update={"host": None,
                                   "emulated": False}),
                                   data=DataSources(eval=EVAL, eval_limit=100)))
    pairs = [(arm["precision"], arm["accuracy"]["top1"], x86["accuracy"]["top1"])
             for arm, x86 in zip(result.records, local.records, strict=True)]
    assert [p for p, _, _ in pairs] == ["fp32", "int8"]
    for precision, arm, x86 in pairs:
        assert abs(arm - x86) <= top1_tolerance(precision) and arm > 0.7, pairs
    print(f"{name} top-1 (precision, arm64, x86):", pairs)


def test_artifact_newer_than_device_runtime_is_refused_before_copying(
        sshd, arm64_python, lenet5_out, tmp_path):
    from edgekit.remote import validate_remote
    from edgekit.remote.compat import RuntimeSkewError

    out = tmp_path / "opset22"
    proc = edgekit("export", str(LENET5), "--opset", "22", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    profile = arm64_profile(sshd, arm64_python, tmp_path / "device")
    with pytest.raises(RuntimeSkewError) as err:
        validate_remote(ValidationJob(target=out, device=profile,
                                      data=DataSources(eval=EVAL, eval_limit=50)))
    assert "model.onnx uses ONNX opset 22" in err.value.message
    assert "onnxruntime 1.19.2 loads opsets up to 21" in err.value.message
    # The fix names the model the folder was exported from (its manifest) and a new folder.
    assert f"edgekit export {LENET5} --opset 21 -o {out}-opset21/" in err.value.hint
    blobs = tmp_path / "device" / "blobs"
    assert [p.name for p in blobs.iterdir() if not p.name.startswith(".")] == []  # nothing sent
    # The refusal is the device's truth: its onnxruntime itself fails on this file, and loads
    # the seed's opset-18 export.
    load = ("import sys, onnxruntime as ort\n"
            "for f in sys.argv[1:]:\n"
            "    try:\n"
            "        ort.InferenceSession(f, providers=['CPUExecutionProvider']); print('ok')\n"
            "    except Exception as exc:\n"
            "        print('fail', ' '.join(str(exc).split())[-120:])\n")
    ran = subprocess.run([str(arm64_python), "-c", load, str(out / "model.onnx"),
                          str(lenet5_out / "model.onnx"), str(lenet5_out / "model.int8.onnx")],
                         capture_output=True, text=True, timeout=300)
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("fail") and "opset 21" in lines[0], ran.stdout + ran.stderr
    assert lines[1:] == ["ok", "ok"], ran.stdout + ran.stderr
    # The profile's max_opset refuses the same way (the seed's opset-18 artifacts, capped at
    # 17), and the CLI exits 2 with the fix.
    capped = profile.model_copy(update={"max_opset": 17})
    with pytest.raises(RuntimeSkewError, match="loads opsets up to 17"):
        validate_remote(ValidationJob(target=lenet5_out, device=capped,
                                      data=DataSources(eval=EVAL, eval_limit=50)))
    path = tmp_path / "arm64.yaml"
    import yaml

    path.write_text(yaml.safe_dump(profile.model_dump(mode="json", exclude_defaults=True)))
    cli = edgekit("validate", str(out), "--device", str(path), "--eval", EVAL, "--limit", "50")
    assert cli.returncode == 2, cli.stderr
    assert "opset 22" in cli.stderr and "--opset 21" in cli.stderr


def _wrapper_copy(arm64_python: Path, folder: Path, replace: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = arm64_python.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = folder / "python"
    path.write_text(text)
    path.chmod(0o755)
    return path


def _wrapper_paths(arm64_python: Path) -> tuple[Path, Path]:
    lines = arm64_python.read_text().splitlines()
    sysroot = next(line.split("'")[1] for line in lines if line.startswith("sysroot="))
    site = next(line.split("'")[1] for line in lines if line.startswith("site="))
    return Path(sysroot), Path(site)


def test_device_python_that_cannot_start_names_what_is_missing(sshd, arm64_python, tmp_path):
    from edgekit.errors import MissingDependencyError
    from edgekit.remote import check_remote

    sysroot, _site = _wrapper_paths(arm64_python)
    no_emulator = _wrapper_copy(arm64_python, tmp_path / "a",
                                {"qemu-aarch64-static": "qemu-aarch64-nowhere"})
    with pytest.raises(MissingDependencyError) as err:
        check_remote(arm64_profile(sshd, no_emulator, tmp_path / "device"))
    assert "the emulator qemu-aarch64-nowhere is missing" in err.value.message
    assert "apt-get install qemu-user-static" in err.value.hint

    empty = tmp_path / "empty-sysroot"
    empty.mkdir()
    incomplete = _wrapper_copy(arm64_python, tmp_path / "b", {str(sysroot): str(empty)})
    with pytest.raises(MissingDependencyError) as err:
        check_remote(arm64_profile(sshd, incomplete, tmp_path / "device"))
    assert "incomplete: lib/ld-linux-aarch64.so.1 is missing" in err.value.message

    # A sysroot without zlib: the dynamic loader names the library.
    partial = tmp_path / "no-zlib"
    subprocess.run(["cp", "-al", str(sysroot), str(partial)], check=True)
    for lib in partial.rglob("libz.so.1*"):
        lib.unlink()
    no_zlib = _wrapper_copy(arm64_python, tmp_path / "c", {str(sysroot): str(partial)})
    with pytest.raises(MissingDependencyError) as err:
        check_remote(arm64_profile(sshd, no_zlib, tmp_path / "device"))
    assert "the shared library libz.so.1 is missing" in err.value.message


def _site_without(site: Path, folder: Path, prefixes: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True)
    for entry in site.iterdir():
        if not entry.name.lower().startswith(prefixes):
            (folder / entry.name).symlink_to(entry)
    return folder


def test_device_without_numpy_or_onnxruntime_gets_the_aarch64_install_command(
        sshd, arm64_python, tmp_path):
    from edgekit.remote import check_remote

    _sysroot, site = _wrapper_paths(arm64_python)
    no_numpy = _wrapper_copy(arm64_python, tmp_path / "a", {f"site='{site}'": "site='{}'".format(
        _site_without(site, tmp_path / "site-a", ("numpy",)))})
    report = check_remote(arm64_profile(sshd, no_numpy, tmp_path / "device"))
    assert not report.ok
    first = report.missing[0]
    assert first["what"].startswith("numpy") and first["blocking"]
    assert "--platform manylinux_2_28_aarch64" in first["fix"] and "--python-version 3.11" in \
        first["fix"]
    assert f"--target {tmp_path / 'site-a'} 'numpy'" in first["fix"]

    no_ort = _wrapper_copy(arm64_python, tmp_path / "b", {f"site='{site}'": "site='{}'".format(
        _site_without(site, tmp_path / "site-b", ("onnxruntime",)))})
    report = check_remote(arm64_profile(sshd, no_ort, tmp_path / "device"))
    missing = {m["what"]: m for m in report.missing}
    assert "runtime onnxruntime" in missing
    fix = missing["runtime onnxruntime"]["fix"]
    assert "manylinux_2_28_aarch64" in fix and "'onnxruntime<1.27'" in fix
    assert any("every runtime" in m["what"] for m in report.missing)  # nothing left to run


# ------------------------------------------------------------------ the built wheel on the device
LEAN_PROFILE = """
name: arm64-local
kind: cpu
threads: 1
batch_sizes: [1]
runtimes:
  onnxruntime: {precisions: [fp32, int8]}
latency: {warmup_count: 2, warmup_seconds: 0.0, min_queries: 10, min_seconds: 0.0, max_seconds: 30}
"""


def test_the_built_wheel_installs_and_runs_on_the_device_with_its_old_onnxruntime(
        arm64_python, lenet5_out, tmp_path_factory, tmp_path):
    """(issue 27) The device install is the built wheel, not the source tree: its requirements
    are met by the device's own packages (onnxruntime 1.19.2, no runtime distribution forced on
    it), and `edgekit bench` from it measures the seed model there."""
    from tests.e2e.test_wheel import build_wheel

    wheel = build_wheel(tmp_path_factory)
    prefix = tmp_path / "device"
    proc = subprocess.run(["bash", str(SCRIPT), "--prefix", str(prefix), "--edgekit-wheel",
                           str(wheel), "--profile-out", str(prefix / "profile.yaml")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "edgekit from the wheel" in proc.stderr
    profile = tmp_path / "arm64-local.yaml"
    profile.write_text(LEAN_PROFILE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(prefix / "python"), "-c",
                           "import edgekit, sys; print(edgekit.__file__); "
                           "from edgekit.cli import main; "
                           f"main(['bench', {str(lenet5_out / 'model.onnx')!r}, '--device', "
                           f"{str(profile)!r}, '--json'])"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, _, out = proc.stdout.partition("\n")
    assert where.startswith(str(prefix / "edgekit-site")), where
    (record,) = json.loads(out)
    assert record["environment"]["cpu"]["arch"] == "aarch64"
    assert record["environment"]["versions"]["onnxruntime"] == "1.19.2"
    assert record["latency"]["p50_ms"] > 0


def test_a_wheel_that_requires_a_newer_onnxruntime_than_the_device_has_is_refused(
        arm64_python, tmp_path):
    """What the base install used to require (onnxruntime>=1.20) is not met by the device's
    1.19.2: scripts/wheel_requires.py says so, and arm64-device.sh stops before installing."""
    import zipfile

    site = Path(arm64_python.read_text().split("site='")[1].split("'")[0])
    wheel = tmp_path / "old_edgekit-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("old_edgekit-0.0.1.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: old-edgekit\nVersion: 0.0.1\n"
                    "Requires-Dist: numpy>=1.24\nRequires-Dist: onnxruntime>=1.20\n"
                    "Requires-Dist: torch>=2.10; extra == \"torch\"\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "wheel_requires.py"),
                           str(wheel), str(site)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "wheel_requires: old_edgekit-0.0.1-py3-none-any.whl needs onnxruntime>=1.20 "
        "(the device has 1.19.2)"]
