"""What a remote device has and lacks (Python, edgekit, the profile's runtimes, Jetson
release and power mode), and the one command that fixes each missing piece."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekit import __version__
from edgekit.devices import DeviceProfile
from edgekit.remote.ssh import SSHTransport

# What the device must be able to import (named, not imported: they run on the device, and the
# agent that checks them is a standalone script): the torch-free measuring path, the validator.
LEAN_MODULE = "edgekit.validate.bench"
VALIDATOR_MODULE = "edgekit.validate.validator"


# ---------------------------------------------------------------------------- device check
@dataclass
class DeviceReport:
    """What the device has, what it lacks and the one command that fixes each missing piece."""

    host: str
    workdir: str
    python: dict[str, Any]
    edgekit: dict[str, Any]
    runtimes: dict[str, dict[str, Any]]
    packages: dict[str, str | None]
    environment: dict[str, Any]
    missing: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(m["blocking"] for m in self.missing)

    @property
    def usable_runtimes(self) -> list[str]:
        return [name for name, info in self.runtimes.items() if info.get("importable")]

    @property
    def jetson(self) -> dict[str, Any]:
        return self.environment.get("jetson") or {}

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("host", "workdir", "python", "edgekit", "runtimes",
                                               "packages", "environment", "missing", "warnings")}

    def lines(self) -> list[str]:
        out = [f"device {self.host}: Python {self.python.get('version')}, edgekit "
               f"{self.edgekit.get('version', 'missing')}, runtimes: "
               + (", ".join(f"{n} {i.get('version') or ''}".strip()
                            for n, i in self.runtimes.items() if i.get("importable")) or "none")]
        caps = (self.runtimes.get("onnxruntime") or {}).get("capabilities") or {}
        if caps:
            out.append(f"  {self.environment.get('machine', '?')}; onnxruntime loads IR <= "
                       f"{caps.get('max_ir_version', '?')}, opset <= "
                       f"{(caps.get('max_opset') or {}).get('', '?')}")
        if self.jetson:
            j = self.jetson
            out.append(f"  Jetson: L4T {j.get('l4t', '?')}, JetPack {j.get('jetpack', '?')}, "
                       f"power mode {j.get('power_mode', '?')}")
        for m in self.missing:
            out.append(f"  missing {m['what']}: {m['fix']}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def _pip(python: str, spec: str) -> str:
    return f"{python} -m pip install '{spec}'"


def aarch64_fix(spec: str, report: DeviceReport | None, python: str, emulated: bool) -> str | None:
    """(issue 20) The install command on an aarch64 device that is not a Jetson: PyPI's manylinux
    aarch64 wheels. An emulated device (scripts/arm64-device.sh) has no pip: the wheel is
    installed from the workstation into its site folder."""
    machine = ((report.environment if report else {}) or {}).get("machine", "")
    if machine not in ("aarch64", "arm64"):
        return None
    if emulated:
        version = ".".join(str((report.python if report else {}).get("version", "3.11")).split(".")[:2])
        site = (report.python if report else {}).get("site") or "SITE (the device's site folder)"
        note = "  (the emulated device has no pip; qemu-user 7.2 runs onnxruntime up to 1.26)" \
            if spec.startswith("onnxruntime") else "  (the emulated device has no pip)"
        return (f"pip install --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 "
                f"--python-version {version} --implementation cp --only-binary=:all: --no-deps "
                f"--target {site} '{spec}'" + note)
    return _pip(python, spec) + "  (PyPI's manylinux aarch64 wheel)"


def runtime_fix(runtime: str, python: str, is_jetson: bool, *, report: DeviceReport | None = None,
                emulated: bool = False) -> str:
    """The one command that installs a runtime on the device."""
    if runtime == "onnxruntime" and not is_jetson:
        arm = aarch64_fix("onnxruntime<1.27" if emulated else "onnxruntime", report, python,
                          emulated)
        if arm:
            return arm
    if runtime == "tensorrt":
        if is_jetson:
            return ("sudo apt-get install -y python3-libnvinfer  (TensorRT's Python bindings "
                    "from JetPack; a venv needs --system-site-packages to see them)")
        return _pip(python, "edgekit[tensorrt]")
    if runtime == "onnxruntime" and is_jetson:
        return (_pip(python, "onnxruntime") + "  (for the GPU: the onnxruntime-gpu wheel for your "
                "JetPack from the Jetson AI Lab index)")
    if runtime == "openvino":
        return _pip(python, "openvino")
    if runtime == "torch":
        return _pip(python, "edgekit[torch]")
    return _pip(python, runtime)


# (issue 20) The device's onnxruntime is not held to the workstation's pin (the `onnxruntime` extra
# in pyproject.toml; the base install requires no runtime distribution): what it can load decides what is sent (edgekit/remote/compat.py). Older than
# this, the oldest one CI runs the device side with (the emulated arm64 device), is a warning.
OLDEST_DEVICE_ONNXRUNTIME = (1, 19, 2)


def _older(version: str | None, than: tuple[int, ...]) -> bool:
    import re

    parts = tuple(int(x) for x in re.findall(r"\d+", version or "")[:3])
    return bool(parts) and parts < than


def build_report(profile: DeviceProfile, probe: dict[str, Any]) -> DeviceReport:
    python = profile.python
    env = probe.get("environment") or {}
    is_jetson = bool(env.get("jetson")) or profile.kind == "jetson"
    report = DeviceReport(host=profile.host or "", workdir=probe.get("workdir", ""),
                          python=probe.get("python", {}), edgekit=probe.get("edgekit") or {},
                          runtimes=probe.get("runtimes", {}), packages=probe.get("packages", {}),
                          environment=env)
    extras = "[tensorrt]" if "tensorrt" in profile.runtimes and not is_jetson else ""
    if not report.python.get("supported", False):
        report.missing.append({
            "what": f"Python >= 3.10 (the device's {python} is {report.python.get('version')})",
            "fix": "install Python 3.10+ on the device (JetPack 6 has it) and point `python:` "
                   "in the profile at it", "blocking": True})
    elif "version" not in report.edgekit:
        report.missing.append({
            "what": f"edgekit ({python} cannot import it: {report.edgekit.get('error', '')})",
            "fix": _pip(python, f"edgekit{extras}=={__version__}"), "blocking": True})
    elif not report.edgekit.get("lean_ok") and _missing_module(report, python, profile):
        report.missing.append(_missing_module(report, python, profile))
    elif not report.edgekit.get("lean_ok"):
        report.missing.append({
            "what": f"a working edgekit install ({report.edgekit.get('error', '')})",
            "fix": _pip(python, f"edgekit{extras}=={__version__}") + " --force-reinstall",
            "blocking": True})
    elif not report.edgekit.get("has_validate"):
        report.missing.append({
            "what": f"edgekit's validator (the device has edgekit {report.edgekit['version']})",
            "fix": _pip(python, f"edgekit{extras}=={__version__}"), "blocking": True})
    else:
        if report.edgekit["version"] != __version__:
            report.warnings.append(f"the device has edgekit {report.edgekit['version']}, this "
                                   f"machine {__version__}; numbers are comparable, but "
                                   f"consider {_pip(python, f'edgekit=={__version__}')}")
        if report.edgekit.get("imports_torch"):
            report.warnings.append("edgekit's lean path imported torch on the device")
    for name in profile.runtimes:
        info = report.runtimes.get(name, {})
        if not info.get("importable"):
            report.missing.append({"what": f"runtime {name}",
                                   "fix": runtime_fix(name, python, is_jetson, report=report,
                                                      emulated=profile.emulated),
                                   "blocking": False})
            continue
        if name == "onnxruntime" and _older(info.get("version"), OLDEST_DEVICE_ONNXRUNTIME):
            report.warnings.append(
                f"the device's onnxruntime {info.get('version')} is older than the oldest edgekit "
                f"tests on a device ({'.'.join(map(str, OLDEST_DEVICE_ONNXRUNTIME))}); artifacts "
                "it cannot load are still refused before copying")
        wanted = profile.runtimes[name].providers
        have = info.get("providers")
        if name == "onnxruntime" and wanted and have is not None:
            absent = [p for p in wanted if p not in have]
            if absent:
                report.warnings.append(f"ONNX Runtime on the device lacks {', '.join(absent)} "
                                       f"(it has {', '.join(have)})")
    if report.ok and profile.runtimes and not report.usable_runtimes:
        report.missing.append({"what": "every runtime of the profile ("
                               + ", ".join(profile.runtimes) + ")",
                               "fix": runtime_fix(next(iter(profile.runtimes)), python,
                                                  is_jetson, report=report,
                                                  emulated=profile.emulated),
                               "blocking": True})
    return report


# The distribution of each module edgekit's lean path imports (a device without one of them).
LEAN_DISTRIBUTIONS = {"numpy": "numpy", "pydantic": "pydantic", "pydantic_core": "pydantic-core",
                      "yaml": "pyyaml", "onnx": "onnx", "rich": "rich", "click": "click",
                      "onnxruntime": "onnxruntime", "typing_extensions": "typing-extensions",
                      "annotated_types": "annotated-types"}


def _missing_module(report: DeviceReport, python: str, profile: DeviceProfile
                    ) -> dict[str, Any] | None:
    """A dependency edgekit's lean path could not import on the device, with its install
    command (on aarch64, PyPI's aarch64 wheel)."""
    import re

    match = re.search(r"No module named '([\w.]+)'", report.edgekit.get("error", ""))
    dist = LEAN_DISTRIBUTIONS.get(match.group(1).split(".")[0]) if match else None
    if dist is None:
        return None
    fix = aarch64_fix(dist, report, python, profile.emulated) or _pip(python, dist)
    return {"what": f"{dist} (edgekit on the device cannot import {match.group(1)})",
            "fix": fix, "blocking": True}


def runtime_modules(profile: DeviceProfile) -> dict[str, str]:
    """The import name of each runtime's library (its Runner's `package`), for the agent."""
    from edgekit.runtimes.base import get_runner

    return {name: get_runner(name).package or name for name in profile.runtimes}


def check_remote(profile: DeviceProfile, *, transport: SSHTransport | None = None,
                 connect_timeout: float | None = None) -> DeviceReport:
    """Reach the device and report what it has and lacks (never raises for what is missing;
    raises for an unreachable device, a refused host key or a workdir that escapes)."""
    if transport is None:
        with SSHTransport(profile, connect_timeout=connect_timeout) as own:
            return check_remote(profile, transport=own)
    probe = transport.agent("probe", {"workdir": profile.workdir,
                                      "runtimes": list(profile.runtimes),
                                      "modules": runtime_modules(profile),
                                      "lean_module": LEAN_MODULE,
                                      "validator_module": VALIDATOR_MODULE},
                            what="connect", timeout=120.0)
    return build_report(profile, probe)
