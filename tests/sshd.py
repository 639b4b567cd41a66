"""A real OpenSSH server on 127.0.0.1 for the remote-device tests: a free port, a throwaway host
key, one authorized user key, a known_hosts file that trusts exactly that host key. The "device"
is this machine. Runs as the current user (as root in CI: PermitRootLogin prohibit-password)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from edgekit.net import free_port  # the tests import it from here too

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
MISSING = [name for name, path in (("sshd", SSHD), ("ssh", shutil.which("ssh")),
                                   ("scp", shutil.which("scp")),
                                   ("ssh-keygen", shutil.which("ssh-keygen"))) if not path]
SKIP_REASON = (f"needs OpenSSH ({', '.join(MISSING)} missing): apt-get install openssh-server "
               "openssh-client") if MISSING else ""


def keygen(path: Path) -> str:
    for old in (path, path.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test",
                    "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class LoopbackSSHD:
    """sshd -D on 127.0.0.1:port with its own config, keys and log in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = folder / "host_key"
        host_pub = keygen(self.host_key)
        self.user_key = folder / "user_key"
        user_pub = keygen(self.user_key)
        self.authorized = folder / "authorized_keys"
        self.authorized.write_text(user_pub + "\n")
        self.authorized.chmod(0o600)
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_pub.split()[:2])}\n")
        self.user = os.environ.get("USER") or _whoami()
        self.log = folder / "sshd.log"
        self.config = folder / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "StrictModes no",
            "UsePAM no", f"PidFile {folder / 'sshd.pid'}", "Subsystem sftp internal-sftp",
            "PrintMotd no", "MaxStartups 50:30:100", "MaxSessions 50", "LogLevel VERBOSE", ""]))
        self.proc: subprocess.Popen | None = None

    def start(self) -> LoopbackSSHD:
        if os.geteuid() == 0:  # sshd insists on its privilege-separation folder
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejects the test config: {check.stderr.strip()}")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening within 15 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def profile_fields(self) -> dict[str, object]:
        """host/port/identity_file/known_hosts for a device profile that reaches this server."""
        return {"host": f"{self.user}@127.0.0.1", "port": self.port,
                "identity_file": str(self.user_key), "known_hosts": str(self.known_hosts)}


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def serve_module_sshd(tmp_path_factory):
    """Body of a module-scoped `sshd` fixture: a started loopback sshd, stopped afterwards, or a
    skip naming what is missing. Use as `sshd = pytest.fixture(scope="module", name="sshd")(...)`.
    As root the server creates /run/sshd; another user's sshd needs no privilege-separation
    folder and serves only that user, which is all these tests need."""
    import pytest

    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    server = LoopbackSSHD(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()
