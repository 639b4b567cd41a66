"""edgekit.remote without a network: path rules on both sides, the SSH command line (host-key
checking always on), error classification, the device report's fixes, Jetson parsing, the
reproducible eval set and the device-side profile. The loopback-sshd tests are in
tests/e2e/test_remote_ssh.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.devices import DeviceProfile
from edgekit.errors import ConfigError, InputError
from edgekit.remote import agent, agent_probe

needs_ssh = pytest.mark.skipif(not (shutil.which("ssh") and shutil.which("scp")),
                               reason="needs the OpenSSH client (apt-get install openssh-client)")


def profile(**fields) -> DeviceProfile:
    base = {"name": "jetson", "kind": "jetson", "runtimes": {"onnxruntime": {},
                                                             "tensorrt": {}},
            "host": "nvidia@jetson.local"}
    return DeviceProfile.model_validate({**base, **fields})


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a", "a\\b",
                                 "a\x00b"])
def test_agent_refuses_paths_that_leave_the_workdir(rel):
    with pytest.raises(agent.AgentError) as err:
        agent.check_rel(rel)
    assert err.value.kind == "path"


def test_agent_workdir_and_symlinks(tmp_path):
    with pytest.raises(agent.AgentError, match=r"contains '\.\.'"):
        agent.resolve_workdir(str(tmp_path / "w" / ".." / ".." / "etc"))
    root = agent.resolve_workdir(str(tmp_path / "w"))
    assert Path(root).is_dir()
    assert agent.inside(root, "blobs", "x") == str(Path(root) / "blobs" / "x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (Path(root) / "jobs").symlink_to(outside)
    with pytest.raises(agent.AgentError, match="outside the workdir"):
        agent.ensure_dir(root, "jobs", "abc")
    assert list(outside.iterdir()) == []
    # A symlinked workdir itself is fine (e.g. ~/.edgekit -> /data/edgekit).
    (tmp_path / "link").symlink_to(tmp_path / "w")
    assert agent.resolve_workdir(str(tmp_path / "link")) == root


def test_agent_commit_verifies_sha(tmp_path):
    import hashlib

    root = agent.resolve_workdir(str(tmp_path / "w"))
    good, bad = b"artifact bytes", b"truncated"
    sha_good = hashlib.sha256(good).hexdigest()
    sha_bad = hashlib.sha256(b"what it should have been").hexdigest()
    have = agent.cmd_have({"workdir": root, "blobs": [sha_good, sha_bad]})
    assert have["present"] == []
    Path(have["incoming"], f"{sha_good}.abcdef12").write_bytes(good)
    Path(have["incoming"], f"{sha_bad}.abcdef12").write_bytes(bad)
    out = agent.cmd_commit({"workdir": root, "blobs": [sha_good, sha_bad], "token": "abcdef12"})
    assert out["committed"] == [sha_good] and "mismatch" in out["bad"][sha_bad]
    assert agent.cmd_have({"workdir": root, "blobs": [sha_good]})["present"] == [sha_good]
    # A blob damaged on the device is dropped, so it is sent again.
    blob = Path(root, "blobs", sha_good)
    blob.chmod(0o644)
    blob.write_bytes(b"bit rot")
    assert agent.cmd_have({"workdir": root, "blobs": [sha_good]})["present"] == []
    assert not blob.exists()
    with pytest.raises(agent.AgentError):
        agent.cmd_commit({"workdir": root, "blobs": [sha_good], "token": "../x"})


def test_agent_reads_jetson_release_and_power_mode(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
        "DATE: Mon May  6 17:34:21 UTC 2024\n")
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(
        b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvpmodel").write_text("#!/bin/sh\necho 'NV Power Mode: 15W'\necho 0\n")
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\necho -n '6.0+b106'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    info = agent_probe.jetson(str(tmp_path))
    assert info["l4t"] == "36.3.0" and info["jetpack"] == "6.0+b106"
    assert info["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info["power_mode"] == "15W" and info["power_mode_id"] == 0
    assert agent_probe.jetson(str(tmp_path / "nothing")) is None


def test_eval_set_is_reproducible_and_loads_without_pickle(tmp_path):
    from edgekit.data import load_dataset
    from edgekit.io.files import sha256_file
    from edgekit.remote import write_eval_npz
    from edgekit.spec import InputSpec

    x = np.random.default_rng(0).standard_normal((20, 1, 28, 28)).astype(np.float32)
    y = np.arange(20) % 10
    write_eval_npz(tmp_path / "a.npz", x, y)
    write_eval_npz(tmp_path / "b.npz", x, y)
    assert sha256_file(tmp_path / "a.npz") == sha256_file(tmp_path / "b.npz")
    spec = InputSpec(shape=(1, 1, 28, 28), class_names=tuple("abcdefghij"))
    data = load_dataset(str(tmp_path / "a.npz"), spec)
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.y, y)


def test_device_side_profile_is_local():
    import yaml

    from edgekit.remote import device_side_profile

    p = profile(port=2222, identity_file="~/.ssh/id", known_hosts="~/kh", python="~/venv/bin/python",
                workdir="~/ek", threads=6)
    text = device_side_profile(p)
    back = DeviceProfile.model_validate(yaml.safe_load(text))
    assert not back.is_remote and back.name == "jetson" and back.threads == 6
    for key in ("host", "port", "identity_file", "known_hosts", "python", "workdir"):
        assert key not in text


@needs_ssh
def test_ssh_command_line_keeps_host_key_checking():
    from edgekit.remote import SSHTransport

    with SSHTransport(profile(port=2222, known_hosts="/k/known", identity_file="/k/id"),
                      connect_timeout=3.2, multiplex=False) as t:
        argv = t.ssh_argv("true")
        joined = " ".join(argv)
        assert "StrictHostKeyChecking=yes" in joined and "BatchMode=yes" in joined
        assert "StrictHostKeyChecking=no" not in joined and "accept-new" not in joined
        assert "ConnectTimeout=4" in joined and "UserKnownHostsFile=/k/known" in joined
        assert argv[-3:] == ["--", "nvidia@jetson.local", "true"]
        assert argv[argv.index("-p") + 1] == "2222"
        scp = t.scp_argv(Path("/tmp/f"), "/w/blobs/x")
        assert scp[-1] == "nvidia@jetson.local:/w/blobs/x" and "-P" in scp
    with SSHTransport(profile(host="u@fe80::1"), multiplex=False) as t6:
        assert t6.scp_argv(Path("/tmp/f"), "/x")[-1] == "u@[fe80::1]:/x"


@needs_ssh
@pytest.mark.parametrize("stderr, kind, text", [
    ("@@@@@\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nHost key verification failed.",
     "HostKeyError", "does not match"),
    ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\n"
     "Host key verification failed.", "HostKeyError", "not in"),
    ("nvidia@jetson.local: Permission denied (publickey).", "RemoteAuthError", "refused the SSH"),
    ("ssh: connect to host jetson.local port 22: Connection timed out",
     "DeviceUnreachableError", "not reachable within 10s"),
    ("ssh: Could not resolve hostname jetson.local: Name or service not known",
     "DeviceUnreachableError", "not reachable"),
])
def test_ssh_failures_are_classified(stderr, kind, text):
    from edgekit.remote import SSHTransport

    with SSHTransport(profile(), multiplex=False) as t:
        error = t._classify(stderr, "connect")
    assert type(error).__name__ == kind and text in error.message and error.hint
    # A dropped connection is not fatal: it is retried.
    with SSHTransport(profile(), multiplex=False) as t:
        assert t._classify("Connection closed by 10.0.0.2 port 22", "command") is None


def test_profile_checks():
    from edgekit.remote import check_remote_profile

    with pytest.raises(ConfigError, match="has no host"):
        check_remote_profile(profile(host=None))
    with pytest.raises(ConfigError, match=r"'\.\.'"):
        check_remote_profile(profile(workdir="/data/../etc"))
    with pytest.raises(ConfigError, match="valid SSH destination"):
        check_remote_profile(profile(host="-oProxyCommand=evil"))
    with pytest.raises(ConfigError, match="characters"):
        check_remote_profile(profile(workdir="~/a b;rm"))
    check_remote_profile(profile(workdir="~/.edgekit"))


def test_report_names_the_fix():
    from edgekit.remote import build_report

    probe = {"python": {"version": "3.10.12", "supported": True}, "workdir": "/home/n/.edgekit",
             "edgekit": {"version": "0.1.0", "lean_ok": True, "has_validate": True,
                         "imports_torch": False},
             "runtimes": {"onnxruntime": {"importable": True, "version": "1.20"},
                          "tensorrt": {"importable": False}},
             "packages": {}, "environment": {"jetson": {"l4t": "36.3.0"}}}
    report = build_report(profile(), probe)
    assert report.ok and report.usable_runtimes == ["onnxruntime"]
    assert report.missing[0]["what"] == "runtime tensorrt"
    assert "python3-libnvinfer" in report.missing[0]["fix"]
    desktop = build_report(profile(kind="gpu"), {**probe, "environment": {}})
    assert "pip install 'edgekit[tensorrt]'" in desktop.missing[0]["fix"]
    no_edgekit = build_report(profile(python="/opt/py/bin/python3"),
                              {**probe, "edgekit": {"error": "No module named 'edgekit'"}})
    assert not no_edgekit.ok
    assert no_edgekit.missing[0]["fix"].startswith("/opt/py/bin/python3 -m pip install 'edgekit")
    old = build_report(profile(), {**probe, "python": {"version": "3.8.10", "supported": False}})
    assert not old.ok and "3.8.10" in old.missing[0]["what"]


def test_artifact_names_cannot_escape(tmp_path):
    from edgekit.remote import safe_relpath

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "sub").mkdir()
    (folder / "sub" / "m.onnx").write_bytes(b"x")
    assert safe_relpath(folder / "sub" / "m.onnx", folder) == "sub/m.onnx"
    (tmp_path / "secret.onnx").write_bytes(b"x")
    (folder / "link.onnx").symlink_to(tmp_path / "secret.onnx")
    for bad in (folder / "link.onnx", folder / ".." / "secret.onnx", tmp_path / "secret.onnx"):
        with pytest.raises(InputError, match="outside the output folder"):
            safe_relpath(bad, folder)


def test_agent_keeps_to_old_python_syntax_and_the_standard_library():
    """The agent must run far enough on an old JetPack Python to say it is too old, before
    edgekit is installed: the script sent (its parts joined) is Python 3.6 and imports only the
    standard library at its top."""
    import ast
    import sys

    from edgekit.remote.ssh import AGENT_PARTS, agent_source

    script = ast.parse(agent_source().decode(), feature_version=(3, 6))
    top = [a.name for n in script.body if isinstance(n, ast.Import) for a in n.names]
    top += [n.module for n in script.body if isinstance(n, ast.ImportFrom)]
    assert top and {m.split(".")[0] for m in top} <= sys.stdlib_module_names
    assert AGENT_PARTS[-1] == Path(agent.__file__).name
    for name in AGENT_PARTS:
        ast.parse((Path(agent.__file__).parent / name).read_text(), feature_version=(3, 6))


def test_the_agent_script_probes_a_device_without_edgekit(tmp_path):
    """The joined script run as the device runs it (`PYTHON - probe PAYLOAD`, the script on
    stdin) by an interpreter that cannot import edgekit (-I -S: no site-packages, no
    PYTHONPATH): the answer carries the environment its probe part reads and says edgekit is
    missing."""
    import base64
    import json
    import subprocess
    import sys

    from edgekit.remote.ssh import AGENT_MARK, agent_source

    payload = {"workdir": str(tmp_path / "w"), "runtimes": ["onnxruntime"],
               "lean_module": "edgekit.validate.bench", "validator_module": "edgekit.validate"}
    encoded = base64.b64encode(json.dumps(payload).encode()).decode()
    done = subprocess.run([sys.executable, "-I", "-S", "-", "probe", encoded],
                          input=agent_source(), capture_output=True, timeout=120, check=True)
    [line] = [x for x in done.stdout.decode().splitlines() if x.startswith(AGENT_MARK)]
    answer = json.loads(line[len(AGENT_MARK):])
    assert answer["ok"] is True and answer["workdir"] == str((tmp_path / "w").resolve())
    assert "No module named 'edgekit'" in answer["edgekit"]["error"]
    assert answer["packages"]["edgekit"] is None
    assert answer["runtimes"]["onnxruntime"] == {"importable": False}
    assert set(answer["environment"]) >= {"hostname", "machine", "clocks"}
    assert (tmp_path / "w" / "blobs" / ".incoming").is_dir()
