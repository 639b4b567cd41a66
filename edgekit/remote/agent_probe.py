"""The device's environment as the agent reports it (`probe`): clocks, the Jetson release and power
mode, package versions, and what the device's ONNX Runtime loads, asked of itself.

A part of the device-side agent: edgekit.remote.ssh sends it ahead of agent.py as one script
on stdin (AGENT_PARTS), so, like agent.py, it imports nothing from edgekit and nothing outside
the standard library, and keeps to Python 3.6 syntax.
"""

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time


# ------------------------------------------------------------------------------ environment
def _read(path, limit=4000):
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _run(argv, timeout=10):
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=timeout, check=False)
        return out.stdout.decode("utf-8", "replace").strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def clocks():
    """CPU and devfreq (GPU, memory controller) clocks from sysfs; `locked` when every clock
    runs at its maximum (what `jetson_clocks` does)."""
    cpus = []
    base = "/sys/devices/system/cpu"
    names = sorted(os.listdir(base)) if os.path.isdir(base) else []
    for name in names:
        freq = os.path.join(base, name, "cpufreq")
        if re.match(r"^cpu\d+$", name) and os.path.isdir(freq):
            cpus.append({"cpu": name, "cur_khz": _read(os.path.join(freq, "scaling_cur_freq")),
                         "max_khz": _read(os.path.join(freq, "scaling_max_freq")),
                         "governor": _read(os.path.join(freq, "scaling_governor"))})
    devfreq = {}
    base = "/sys/class/devfreq"
    for name in (sorted(os.listdir(base)) if os.path.isdir(base) else []):
        folder = os.path.join(base, name)
        devfreq[name] = {"device": os.path.basename(os.path.realpath(os.path.join(folder, "device")))
                         if os.path.exists(os.path.join(folder, "device")) else name,
                         "cur_hz": _read(os.path.join(folder, "cur_freq")),
                         "max_hz": _read(os.path.join(folder, "max_freq")),
                         "governor": _read(os.path.join(folder, "governor"))}
    pairs = [(c["cur_khz"], c["max_khz"]) for c in cpus] + \
        [(d["cur_hz"], d["max_hz"]) for d in devfreq.values()]
    pairs = [(a, b) for a, b in pairs if a and b]
    return {"cpu": cpus, "devfreq": devfreq,
            "locked": all(a == b for a, b in pairs) if pairs else None}


def jetson(root="/"):
    """L4T and JetPack release, board model, nvpmodel power mode; None off a Jetson.
    (`root` lets a test point it at a fake file system.)"""
    release = _read(os.path.join(root, "etc/nv_tegra_release"))
    if release is None:
        return None
    info = {"l4t_release": release.splitlines()[0].strip("# ").strip()}
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
    if match:
        info["l4t"] = f"{match.group(1)}.{match.group(2)}"
    info["model"] = _read(os.path.join(root, "proc/device-tree/model"))
    jetpack = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if jetpack and "no packages found" not in jetpack.lower():
        info["jetpack"] = jetpack
    mode = _run(["nvpmodel", "-q"])
    if mode:
        info["power_mode_raw"] = mode[:500]
        named = re.search(r"NV Power Mode:\s*(\S+)", mode)
        if named:
            info["power_mode"] = named.group(1)
        number = re.findall(r"^\s*(\d+)\s*$", mode, re.M)
        if number:
            info["power_mode_id"] = int(number[-1])
    return info


def device_environment():
    env = {"hostname": socket.gethostname(), "platform": platform.platform(),
           "machine": platform.machine(), "clocks": clocks(), "time": time.time()}
    info = jetson()
    if info:
        env["jetson"] = info
    return env


def package_version(dist, module):
    try:
        from importlib import metadata  # Python 3.8+
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - absent, or no metadata (apt-installed TensorRT)
        pass
    if dist != module:
        return None
    try:
        import importlib.util
        if importlib.util.find_spec(module) is None:
            return None
        mod = __import__(module)
        return str(getattr(mod, "__version__", "unknown"))
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------- what the device's ONNX Runtime loads
def _pb_varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field, value):
    """One protobuf field: an int (varint), or bytes/str (length-delimited)."""
    if isinstance(value, int):
        return _pb_varint(field << 3) + _pb_varint(value)
    if isinstance(value, str):
        value = value.encode()
    return _pb_varint(field << 3 | 2) + _pb_varint(len(value)) + value


def tiny_onnx(ir_version, opset):
    """An ONNX model `y = Identity(x)` as bytes, written without the onnx package (the agent
    imports nothing outside the standard library)."""
    def value_info(name):
        shape = _pb(2, _pb(1, _pb(1, 1)))  # TensorShapeProto{dim{dim_value: 1}}
        return _pb(1, name) + _pb(2, _pb(1, _pb(1, 1) + shape))  # float tensor of shape [1]
    node = _pb(1, "x") + _pb(2, "y") + _pb(4, "Identity")
    graph = _pb(1, node) + _pb(2, "g") + _pb(11, value_info("x")) + _pb(12, value_info("y"))
    return _pb(1, ir_version) + _pb(8, _pb(2, opset)) + _pb(7, graph)


def _load_error(ort, model_bytes):
    try:
        ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        return ""
    except Exception as exc:  # noqa: BLE001 - the message is what we want
        return str(exc)


def ort_capabilities(ort, providers):
    """What this onnxruntime loads and runs, asked of itself: the highest IR version and opset
    per domain it accepts, and per domain the operators it has kernels for (on `providers`) or
    knows a schema of, with the first opset of each. The workstation refuses an artifact the
    device cannot load before copying it (edgekit/remote/compat.py)."""
    caps = {"max_ir_version": None, "max_opset": {}, "kernels": {}, "schemas": {}}
    match = re.search(r"max supported IR version:\s*(\d+)", _load_error(ort, tiny_onnx(1000, 7)))
    if match:
        caps["max_ir_version"] = int(match.group(1))
    match = re.search(r"is till opset\s*(\d+)", _load_error(ort, tiny_onnx(7, 1000)))
    if match:
        caps["max_opset"][""] = int(match.group(1))
    try:
        from onnxruntime.capi import _pybind_state as C
    except ImportError:
        return caps
    try:
        for schema in C.get_all_operator_schema():
            ops = caps["schemas"].setdefault(schema.domain, {})
            ops[schema.name] = min(ops.get(schema.name, 10 ** 6), int(schema.since_version))
            if schema.domain != "" or "" not in caps["max_opset"]:
                caps["max_opset"][schema.domain] = max(caps["max_opset"].get(schema.domain, 0),
                                                       int(schema.since_version))
    except Exception as exc:  # noqa: BLE001 - a build without schemas: reported, not raised
        caps["schema_error"] = str(exc)[:200]
    try:
        for kernel in C.get_all_opkernel_def():
            if kernel.provider in providers:
                ops = caps["kernels"].setdefault(kernel.domain, {})
                ops[kernel.op_name] = min(ops.get(kernel.op_name, 10 ** 6),
                                          int(kernel.version_range[0]))
    except Exception as exc:  # noqa: BLE001
        caps["kernel_error"] = str(exc)[:200]
    return caps


def probe_runtime(runtime, module):
    """Whether `module` (the runtime's package) imports here; for ONNX Runtime its version,
    providers and what it loads."""
    import importlib.util

    entry = {"importable": False}
    try:
        entry["importable"] = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        pass
    if entry["importable"] and runtime == "onnxruntime":
        try:
            import onnxruntime
            entry["version"] = onnxruntime.__version__
            entry["providers"] = list(onnxruntime.get_available_providers())
            entry["capabilities"] = ort_capabilities(onnxruntime, entry["providers"])
        except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
            entry["importable"], entry["error"] = False, str(exc)[:300]
    return entry


def probe_edgekit(lean_module, validator_module):
    """The device's edgekit: version, path, whether its lean path imports (and pulls in torch)
    and whether it has the validator; the error when it is missing or broken."""
    import importlib
    import importlib.util

    found = None
    try:
        import edgekit
        found = {"version": getattr(edgekit, "__version__", "unknown"),
                 "path": os.path.dirname(edgekit.__file__)}
        before = "torch" in sys.modules
        importlib.import_module(lean_module)  # the lean path the device runs
        found["lean_ok"] = True
        found["imports_torch"] = "torch" in sys.modules and not before
        found["has_validate"] = importlib.util.find_spec(validator_module) is not None
    except ImportError as exc:
        if found is None:
            found = {"error": str(exc)[:300]}
        else:
            found["lean_ok"], found["error"] = False, str(exc)[:300]
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        found = dict(found or {}, lean_ok=False, error=str(exc)[:300])
    return found
