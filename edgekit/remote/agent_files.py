"""The device-side agent's ground: its error, and the paths and files of the device's workdir
(every path checked to stay inside it, symlinks resolved; JSON written whole or not at all).

A part of the device-side agent: edgekit.remote.ssh sends it first, ahead of agent_probe.py and
agent.py, as one script on stdin (AGENT_PARTS), so, like agent.py, it imports nothing from
edgekit and nothing outside the standard library, and keeps to Python 3.6 syntax.
"""

import hashlib
import json
import os
import re

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
JOB_RE = re.compile(r"^[0-9a-f]{16,64}$")


class AgentError(Exception):
    def __init__(self, message, hint="", kind="error"):
        Exception.__init__(self, message)
        self.message, self.hint, self.kind = message, hint, kind


# ------------------------------------------------------------------------------------ paths
def check_rel(rel):
    """A relative path made of plain names: no absolute path, no '..', no empty part."""
    bad = (not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel
           or "\x00" in rel or any(part in ("", ".", "..") for part in rel.split("/")))
    if bad:
        raise AgentError(f"refusing path {rel!r}: it would leave the workdir",
                         "artifact and file names must be plain relative paths (no '..', no '/' "
                         "at the start)", "path")
    return rel


def resolve_workdir(raw):
    if not isinstance(raw, str) or not raw or "\x00" in raw:
        raise AgentError(f"invalid workdir {raw!r}", "set workdir in the device profile", "path")
    if ".." in raw.split("/"):
        raise AgentError(f"refusing workdir {raw!r}: it contains '..'",
                         "give the workdir as a plain path, e.g. ~/.edgekit", "path")
    path = os.path.expanduser(raw)
    if not os.path.isabs(path):
        path = os.path.join(os.path.expanduser("~"), path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise AgentError(f"cannot create the workdir {path} on the device: {exc}",
                         "choose a writable workdir in the device profile", "path") from None
    return os.path.realpath(path)


def inside(root, *parts):
    """root/parts..., refused when it resolves (through '..' or a symlink) outside root."""
    for part in parts:
        for piece in part.split("/"):
            check_rel(piece)
    path = os.path.join(root, *parts)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root + os.sep):
        raise AgentError(f"{path} leads outside the workdir {root} (it resolves to {real})",
                         "remove that symlink from the device's workdir; edgekit only reads and "
                         "writes inside it", "path")
    return path


def ensure_dir(root, *parts):
    path = inside(root, *parts)
    os.makedirs(path, exist_ok=True)
    return inside(root, *parts)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def write_json(path, obj):
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def job_dir(root, job_id, must_exist=True):
    if not isinstance(job_id, str) or not JOB_RE.match(job_id):
        raise AgentError(f"invalid job id {job_id!r}", kind="path")
    path = inside(root, "jobs", job_id)
    if must_exist and not os.path.isfile(os.path.join(path, "job.json")):
        raise AgentError(f"job {job_id} is not prepared on the device", kind="state")
    return path


def check_sha(sha):
    if not isinstance(sha, str) or not SHA_RE.match(sha):
        raise AgentError(f"invalid sha256 {sha!r}", kind="path")
    return sha
