"""The SSH side of edgekit.remote: the system OpenSSH client with host-key checking always on,
retries of dropped connections, one shared connection per validation, errors that say what to
do, and calls to the device-side agent (edgekit/remote/agent.py, sent over stdin)."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from edgekit.devices import DeviceProfile
from edgekit.errors import ConfigError, EdgekitError, MissingDependencyError

# The device-side agent: these files, in this order, sent as one script on stdin (agent.py last:
# it runs the command); standard library only, Python 3.6 syntax (tests/unit/test_remote.py).
AGENT_PARTS = ("agent_files.py", "agent_probe.py", "agent.py")
# How a part imports the parts before it: dropped from the script, where their code comes first.
_PART_IMPORT = re.compile(r"^from edgekit\.remote\.agent_\w+ import (?:\([^)]*\)|[^\n]*)\n", re.M)


def agent_source() -> bytes:
    """The script sent to the device on every agent call: the agent's parts joined, the imports
    between them dropped."""
    folder = Path(__file__).parent
    return "\n\n".join(_PART_IMPORT.sub("", (folder / name).read_text())
                        for name in AGENT_PARTS).encode()
AGENT_MARK = "@@edgekit-agent@@"
HOST_KEY_PATTERNS = ("host key verification failed", "remote host identification has changed",
                     "host key is known for", "no matching host key")
UNREACHABLE_PATTERNS = ("connection refused", "connection timed out", "operation timed out",
                        "no route to host", "network is unreachable", "could not resolve",
                        "name or service not known", "temporary failure in name resolution",
                        "timed out")
AUTH_PATTERNS = ("permission denied", "too many authentication failures")


# ------------------------------------------------------------------------------------ errors
class RemoteError(EdgekitError):
    """Something on the way to, or on, the remote device went wrong."""


class DeviceUnreachableError(RemoteError):
    """The device did not answer within the connect timeout."""


class HostKeyError(RemoteError):
    """The device's host key is unknown or does not match known_hosts: never bypassed."""


class RemoteAuthError(RemoteError):
    """SSH reached the device but the key was refused."""


class RemotePathError(RemoteError):
    """A path on the device would leave the workdir (`..`, a symlink out)."""


# --------------------------------------------------------------------------------- transport
def _shell_word(path: str) -> str:
    """Quote for the remote POSIX shell, keeping a leading ~ expandable."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _target_label(profile: DeviceProfile) -> str:
    return f"{profile.host}" + (f" port {profile.port}" if profile.port else "")


def check_remote_profile(profile: DeviceProfile) -> None:
    """A profile used as remote must have a host and a workdir that cannot leave itself."""
    if not profile.host:
        raise ConfigError(f"device profile {profile.name!r} has no host, so it cannot be "
                          "reached over SSH",
                          hint="add `host: user@device` (and optionally port, identity_file, "
                          "known_hosts, python, workdir) to the profile")
    if not re.fullmatch(r"[A-Za-z0-9_.@:\[\]%-]+", profile.host) or profile.host.startswith("-"):
        raise ConfigError(f"device profile {profile.name!r}: host {profile.host!r} is not a "
                          "valid SSH destination", hint="write it as user@hostname or hostname")
    workdir = profile.workdir
    if not workdir or ".." in workdir.replace("\\", "/").split("/") or "\x00" in workdir:
        raise ConfigError(f"device profile {profile.name!r}: workdir {workdir!r} contains '..'",
                          hint="give the device's workdir as a plain path, e.g. ~/.edgekit")
    if not re.fullmatch(r"[A-Za-z0-9_.~/+@=,-]+", workdir):
        raise ConfigError(f"device profile {profile.name!r}: workdir {workdir!r} has characters "
                          "edgekit does not pass to a remote shell",
                          hint="use letters, digits and . _ - / ~ in the workdir")


class SSHTransport:
    """The system OpenSSH client, with host-key checking always on.

    `ssh`/`scp` name the programs (default: $EDGEKIT_SSH / $EDGEKIT_SCP, else ssh / scp); a test
    can put a wrapper in between. Transient failures (a dropped connection: ssh exit 255 that is
    not a refused key or an unreachable host) are retried `attempts` times."""

    def __init__(self, profile: DeviceProfile, *, connect_timeout: float | None = None,
                 ssh: str | None = None, scp: str | None = None, attempts: int = 3,
                 backoff_s: float = 1.0, multiplex: bool = True) -> None:
        check_remote_profile(profile)
        self.profile = profile
        self.connect_timeout = float(connect_timeout or profile.connect_timeout)
        self.ssh = shlex.split(ssh or os.environ.get("EDGEKIT_SSH") or "ssh")
        self.scp = shlex.split(scp or os.environ.get("EDGEKIT_SCP") or "scp")
        for program in (self.ssh[0], self.scp[0]):
            if not shutil.which(program):
                raise MissingDependencyError(
                    f"{program} is not installed here; remote devices are reached with OpenSSH",
                    hint="install it: sudo apt-get install openssh-client")
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.calls = 0
        # One SSH connection shared by the calls of a validation (ControlMaster): a handshake
        # per call costs a second on a Jetson over Wi-Fi. The socket lives in a private folder.
        # A killed run cannot remove its folder; the next one removes those whose owner is gone.
        self.control_dir = None
        if multiplex:
            from edgekit.io.debris import pid_tag, sweep

            sweep(tempfile.gettempdir(), prefix="edgekit-ssh-")
            self.control_dir = tempfile.mkdtemp(prefix=f"edgekit-ssh-{pid_tag()}-")

    def close(self) -> None:
        """Close the shared connection, if any."""
        if self.control_dir is None:
            return
        port = ["-p", str(self.profile.port)] if self.profile.port else []
        try:
            subprocess.run([*self.ssh, *self.options(), *port, "-O", "exit", "--",
                            self.profile.host], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.control_dir, ignore_errors=True)
        self.control_dir = None

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ command lines
    def options(self) -> list[str]:
        p = self.profile
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if p.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={os.path.expanduser(p.known_hosts)}"]
        if p.identity_file:
            opts += ["-i", os.path.expanduser(p.identity_file), "-o", "IdentitiesOnly=yes"]
        if self.control_dir:
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_dir}/%C",
                     "-o", "ControlPersist=60"]
        return opts

    def ssh_argv(self, remote_command: str) -> list[str]:
        port = ["-p", str(self.profile.port)] if self.profile.port else []
        return [*self.ssh, *self.options(), *port, "--", self.profile.host, remote_command]

    def scp_argv(self, local: Path, remote_path: str) -> list[str]:
        port = ["-P", str(self.profile.port)] if self.profile.port else []
        host = self.profile.host
        user, at, name = host.rpartition("@")
        if ":" in name and not name.startswith("["):
            host = f"{user}{at}[{name}]"
        return [*self.scp, *self.options(), "-q", *port, "--", str(local), f"{host}:{remote_path}"]

    # ------------------------------------------------------------------ failures
    def _classify(self, stderr: str, what: str) -> RemoteError | None:
        """The fatal error for an ssh failure, or None when it looks transient."""
        low = stderr.lower()
        label = _target_label(self.profile)
        known = self.profile.known_hosts or "~/.ssh/known_hosts"
        port = self.profile.port or 22
        name = self.profile.host.rpartition("@")[2]
        if any(k in low for k in HOST_KEY_PATTERNS):
            if "changed" in low or "does not match" in low or "mismatch" in low:
                return HostKeyError(
                    f"{label}: the device's host key does not match the one in {known}; "
                    "refusing to connect (it may be another machine, or a reinstalled one)",
                    hint=f"if the device was reinstalled, check its new key, then remove the old "
                    f"one: ssh-keygen -R '[{name}]:{port}' -f {known}")
            return HostKeyError(
                f"{label}: host key verification failed (its key is not in {known}); edgekit "
                "never turns host-key checking off",
                hint=f"check the device's fingerprint and add it once: ssh-keyscan -p {port} "
                f"{name} >> {known}  (or connect once by hand: ssh -p {port} {self.profile.host})")
        if any(k in low for k in AUTH_PATTERNS):
            return RemoteAuthError(
                f"{label}: the device refused the SSH key ({_last_line(stderr)})",
                hint=f"set identity_file in the profile, or install your key: ssh-copy-id -p "
                f"{port} {self.profile.host}")
        if any(k in low for k in UNREACHABLE_PATTERNS) and what == "connect":
            return DeviceUnreachableError(
                f"{label} is not reachable within {self.connect_timeout:g}s "
                f"({_last_line(stderr)})",
                hint=f"is the device on and on the network, and sshd running? try: "
                f"ssh -p {port} {self.profile.host} true")
        return None

    # ------------------------------------------------------------------ calls
    def run(self, remote_command: str, *, input_bytes: bytes | None = None,
            timeout: float = 120.0, what: str = "command", retry: bool = True
            ) -> subprocess.CompletedProcess:
        """Run a remote shell command; retry dropped connections; raise on fatal ssh errors."""
        last = ""
        attempts = self.attempts if retry else 1
        for attempt in range(attempts):
            self.calls += 1
            try:
                proc = subprocess.run(self.ssh_argv(remote_command), input=input_bytes,
                                      capture_output=True, timeout=timeout + self.connect_timeout)
            except subprocess.TimeoutExpired:
                last = f"no answer within {timeout + self.connect_timeout:g}s"
                if what == "connect":
                    raise DeviceUnreachableError(
                        f"{_target_label(self.profile)} did not answer within "
                        f"{timeout + self.connect_timeout:g}s",
                        hint="is the device on, and is its sshd running?") from None
            else:
                if proc.returncode != 255:
                    return proc
                last = proc.stderr.decode(errors="replace").strip()
                fatal = self._classify(last, what if attempt == 0 else "command")
                if fatal:
                    raise fatal
            if attempt + 1 < attempts:
                time.sleep(self.backoff_s * 2 ** attempt)
        if what == "connect":
            raise DeviceUnreachableError(f"{_target_label(self.profile)}: ssh failed ({last})",
                                         hint="check the device is reachable: ssh "
                                         f"{self.profile.host} true")
        raise RemoteError(f"{_target_label(self.profile)}: the SSH connection failed "
                          f"{attempts} times ({_last_line(last)})",
                          hint="rerun the same command: what was copied is kept, and a running "
                          "job is picked up again")

    def upload(self, local: Path, remote_path: str) -> int:
        """Copy one file; retried on failure. Returns the number of attempts it took."""
        last = ""
        for attempt in range(self.attempts):
            self.calls += 1
            try:
                proc = subprocess.run(self.scp_argv(local, remote_path), capture_output=True,
                                      timeout=max(600.0, local.stat().st_size / 1e5))
            except subprocess.TimeoutExpired:
                last = "the copy timed out"
            else:
                if proc.returncode == 0:
                    return attempt + 1
                last = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
                fatal = self._classify(last, "copy")
                if fatal:
                    raise fatal
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise RemoteError(f"copying {local.name} to {_target_label(self.profile)} failed "
                          f"{self.attempts} times ({_last_line(last)})",
                          hint="rerun the same command: files already copied are not sent again")

    def agent(self, command: str, payload: dict[str, Any], *, timeout: float = 120.0,
              what: str = "command", retry: bool = True) -> dict[str, Any]:
        """Run one command of the device-side agent and return its JSON answer."""
        python = self.profile.python
        encoded = base64.b64encode(json.dumps(payload).encode()).decode()
        remote = f"{_shell_word(python)} - {command} {encoded}"
        proc = self.run(remote, input_bytes=agent_source(), timeout=timeout, what=what,
                        retry=retry)
        out = proc.stdout.decode(errors="replace")
        answer = None
        for line in reversed(out.splitlines()):
            if line.startswith(AGENT_MARK):
                answer = json.loads(line[len(AGENT_MARK):])
                break
        label = _target_label(self.profile)
        err = proc.stderr.decode(errors="replace").strip()
        if answer is None:
            cannot_start = _cannot_start(err)
            if cannot_start:
                raise MissingDependencyError(f"{label}: the device's Python {python!r} cannot "
                                             f"start: {cannot_start[0]}", hint=cannot_start[1])
            if proc.returncode == 127 or "not found" in err.lower() or "no such file" in err.lower():
                raise MissingDependencyError(
                    f"{label}: there is no Python at {python!r} on the device ({_last_line(err)})",
                    hint="set `python:` in the device profile to the interpreter that has edgekit, "
                    "e.g. ~/edgekit-venv/bin/python")
            raise RemoteError(f"{label}: {python} on the device failed to run edgekit's agent "
                              f"(exit {proc.returncode}: {_last_line(err)})",
                              hint="check that `python:` in the profile is Python 3")
        if not answer.get("ok"):
            cls = RemotePathError if answer.get("kind") == "path" else RemoteError
            raise cls(f"{label}: {answer.get('error')}",
                      hint=answer.get("hint") or "see the message above")
        return answer


def _cannot_start(stderr: str) -> tuple[str, str] | None:
    """(what, fix) when the device's interpreter could not start at all: a shared library the
    dynamic loader did not find, or (an emulated device, scripts/arm64-device.sh) its wrapper's
    report of a missing emulator or an incomplete sysroot."""
    wrapper = re.search(r"edgekit-arm64: (.*?)(?: \(([^()]*)\))?$", stderr, re.M)
    if wrapper:
        return wrapper.group(1), wrapper.group(2) or "rebuild the device: make arm64-device"
    library = re.search(r"error while loading shared libraries: ([^:\s]+)", stderr)
    if library:
        return (f"the shared library {library.group(1)} is missing",
                f"install the package that provides {library.group(1)} on the device (an "
                "emulated arm64 device: rerun make arm64-device, which rebuilds its sysroot)")
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
