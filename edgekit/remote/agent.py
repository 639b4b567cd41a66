"""The device side of `edgekit.remote`: a standard-library-only script that the workstation sends
over SSH on every call (`ssh HOST PYTHON - COMMAND PAYLOAD`, this file on stdin after the parts
it imports, edgekit.remote.ssh.agent_source), so it works on
a device before edgekit is installed there (to say what is missing) and never depends on the
device's edgekit version. It imports nothing outside the standard library (and of edgekit only
its own parts, which the script sent carries ahead of it); it keeps to Python 3.6 syntax so that an old JetPack interpreter can still report that
it is too old.

Layout of the device's workdir (all paths are checked to stay inside it, symlinks resolved):

    blobs/<sha256>            content-addressed files (artifacts, eval sets), read-only
    blobs/.incoming/<sha256>  uploads in flight; verified, then renamed into blobs/
    jobs/<job_id>/            one validation: out/ (the artifacts), eval-*.npz, device.yaml,
                              job.json, records/<task>.json, logs/<task>.log, status.json
    device.lock               flock held by the running job: one job per device at a time
    device.lock.json          who holds it (job id, pid, process group, start time)

Each command prints one line `MARK + json` on stdout; anything else a login shell prints is
ignored by the caller.
"""

import base64
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

# The parts sent ahead of this file in the same script (edgekit.remote.ssh.AGENT_PARTS), imported
# here when the agent is a module of edgekit; in the script sent to a device their code comes
# first and these import lines are dropped.
from edgekit.remote.agent_files import (
    AgentError,
    check_rel,
    check_sha,
    ensure_dir,
    inside,
    job_dir,
    read_json,
    resolve_workdir,
    sha256_file,
    write_json,
)
from edgekit.remote.agent_probe import (
    device_environment,
    package_version,
    probe_edgekit,
    probe_runtime,
)

MARK = "@@edgekit-agent@@"
LOCK_NAME = "device.lock"
OWNER_NAME = "device.lock.json"
PACKAGES = {
    # distribution -> import name
    "edgekit": "edgekit", "numpy": "numpy", "onnx": "onnx", "pydantic": "pydantic",
    "pyyaml": "yaml", "click": "click", "rich": "rich", "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt",
    "torch": "torch",
}


def cmd_probe(p):
    """What the device has: Python, edgekit (and whether its lean path imports), runtimes and
    their versions, ONNX Runtime providers, Jetson release, power mode and clocks."""
    root = resolve_workdir(p["workdir"])
    for sub in ("blobs", "jobs"):
        ensure_dir(root, sub)
    ensure_dir(root, "blobs", ".incoming")
    probe_file = inside(root, ".write-test")
    with open(probe_file, "w") as fh:
        fh.write("ok")
    os.remove(probe_file)
    info = {"python": {"version": platform.python_version(), "executable": sys.executable,
                       "supported": sys.version_info >= (3, 10),
                       # an emulated device's wrapper says where its packages go (no pip there)
                       "site": os.environ.get("EDGEKIT_DEVICE_SITE")},
            "workdir": root, "environment": device_environment(),
            "packages": {}, "runtimes": {}, "edgekit": None}
    for dist, module in PACKAGES.items():
        info["packages"][dist] = package_version(dist, module)
    for runtime in p.get("runtimes", []):
        module = p.get("modules", {}).get(runtime, runtime)  # the caller's Runner.package
        info["runtimes"][runtime] = probe_runtime(runtime, module)
    info["edgekit"] = probe_edgekit(p["lean_module"], p["validator_module"])
    return info


# ------------------------------------------------------------------------------------ blobs
def cmd_have(p):
    """Which of the given blobs are on the device, each verified by its sha256 (a corrupt one
    is removed so it is sent again)."""
    root = resolve_workdir(p["workdir"])
    blobs = ensure_dir(root, "blobs")
    ensure_dir(root, "blobs", ".incoming")
    present = []
    for sha in p["blobs"]:
        path = inside(root, "blobs", check_sha(sha))
        if os.path.lexists(path):
            if os.path.isfile(path) and sha256_file(path) == sha:
                present.append(sha)
            else:
                os.remove(path)
    incoming = inside(root, "blobs", ".incoming")
    for name in os.listdir(incoming):  # uploads abandoned more than a day ago
        path = os.path.join(incoming, name)
        try:
            if os.path.isfile(path) and time.time() - os.path.getmtime(path) > 86400:
                os.remove(path)
        except OSError:
            pass
    return {"present": present, "blobs": blobs, "incoming": incoming}


def cmd_commit(p):
    """Move verified uploads (blobs/.incoming/<sha>.<token>, one token per sender, so two
    senders of the same file never write into each other's copy) into blobs/; report the ones
    that do not match."""
    root = resolve_workdir(p["workdir"])
    token = p["token"]
    if not isinstance(token, str) or not re.match(r"^[0-9a-f]{8,64}$", token):
        raise AgentError(f"invalid upload token {token!r}", kind="path")
    committed, bad = [], {}
    for sha in p["blobs"]:
        src = inside(root, "blobs", ".incoming", f"{check_sha(sha)}.{token}")
        dst = inside(root, "blobs", sha)
        if os.path.isfile(dst) and not os.path.isfile(src):
            committed.append(sha)
            continue
        if not os.path.isfile(src):
            bad[sha] = "missing"
            continue
        actual = sha256_file(src)
        if actual != sha:
            os.remove(src)
            bad[sha] = f"sha256 mismatch (got {actual})"
            continue
        os.chmod(src, 0o444)
        os.replace(src, dst)
        committed.append(sha)
    return {"committed": committed, "bad": bad}


# ------------------------------------------------------------------------------------- jobs
def cmd_prepare(p):
    """Create jobs/<id>/ from blobs (hard links, or copies where the file system has none),
    atomically: the folder appears whole or not at all."""
    root = resolve_workdir(p["workdir"])
    job_id = p["job_id"]
    final = job_dir(root, job_id, must_exist=False)
    if os.path.isfile(os.path.join(final, "job.json")):
        return {"state": "exists"}
    ensure_dir(root, "jobs")
    tmp = inside(root, "jobs", f".{job_id}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for rel, sha in sorted(p["files"].items()):
            src = inside(root, "blobs", check_sha(sha))
            if not os.path.isfile(src):
                raise AgentError(f"blob {sha} for {rel} is not on the device", kind="state")
            dst = os.path.join(tmp, check_rel(rel))  # tmp is new: no symlinks in it
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        with open(os.path.join(tmp, "device.yaml"), "w") as fh:
            fh.write(p["device_profile"])
        job = dict(p["job"], job_id=job_id, created=time.time())
        write_json(os.path.join(tmp, "job.json"), job)
        for sub in ("records", "logs"):
            os.makedirs(os.path.join(tmp, sub))
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "job.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    job_dir(root, job_id)  # re-check the final folder resolves inside the workdir
    return {"state": "prepared"}


def _owner(root):
    return read_json(inside(root, OWNER_NAME), {}) or {}


def _lock_state(root):
    """('free', {}) or ('held', owner) for the device lock, without keeping it."""
    import fcntl

    fd = os.open(inside(root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return "held", _owner(root)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "free", {}
    finally:
        os.close(fd)


def cmd_start(p):
    """Start the job detached from the SSH session (it survives a dropped connection), holding
    the device lock for as long as it runs. Idempotent: a complete job is not run again; a job
    already running is reattached to; a job that died or timed out is resumed (finished tasks
    are kept)."""
    import fcntl

    root = resolve_workdir(p["workdir"])
    folder = job_dir(root, p["job_id"])
    status_path = os.path.join(folder, "status.json")
    if (read_json(status_path) or {}).get("state") == "complete":
        return {"state": "done"}
    fd = os.open(inside(root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        owner = _owner(root)
        state = "running" if owner.get("job_id") == p["job_id"] else "busy"
        return {"state": state, "owner": owner}
    status = read_json(status_path)
    if (status or {}).get("state") == "complete":
        os.close(fd)
        return {"state": "done"}
    if status is not None:  # partial (timed out): resume it, keeping the finished tasks
        os.remove(status_path)
    job = read_json(os.path.join(folder, "job.json"))
    attempt = int(read_json(os.path.join(folder, "attempts.json"), 0) or 0) + 1
    write_json(os.path.join(folder, "attempts.json"), attempt)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the runner: own session, stdio away from the SSH channel
        _become_runner(root, folder, job, attempt, p["job_id"], ready_r, ready_w)
    os.close(ready_w)
    os.close(fd)  # the runner keeps the lock through its own copy of the descriptor
    os.read(ready_r, 1)
    os.close(ready_r)
    return {"state": "started", "owner": _owner(root)}


def _become_runner(root, folder, job, attempt, job_id, ready_r, ready_w):
    """The forked child: its own session, stdio on the job's runner.log, the lock owner
    recorded, the parent told it may return; then the job. Never returns (os._exit)."""
    try:
        os.close(ready_r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(folder, "logs", "runner.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        owner = {"job_id": job_id, "pid": os.getpid(), "pgid": os.getpgid(0),
                 "attempt": attempt, "started": time.time(), "host": socket.gethostname()}
        write_json(inside(root, OWNER_NAME), owner)
        os.write(ready_w, b"1")
        os.close(ready_w)
        run_job(folder, job, attempt)
    except BaseException as exc:  # noqa: BLE001 - the runner must never return to the caller
        try:
            sys.stderr.write(f"runner failed: {exc!r}\n")
        except Exception:  # noqa: BLE001
            pass
        os._exit(1)
    os._exit(0)


def _tail(path, limit=2000):
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_job(folder, job, attempt):
    """Run the job's tasks in order, each with what is left of the job's timeout; a task whose
    records exist (an earlier attempt finished it) is skipped. Writes status.json at the end."""
    started = time.time()
    write_json(os.path.join(folder, "environment.json"), device_environment())
    deadline = started + float(job.get("timeout", 3600))
    python = os.path.expanduser(job.get("python") or sys.executable)
    env = dict(os.environ, EDGEKIT_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    reason = None
    for index, task in enumerate(job["tasks"]):
        out = os.path.join(folder, "records", f"{index}.json")
        if os.path.isfile(out):
            continue
        remaining = deadline - time.time()
        if remaining <= 0:
            reason = f"the job's timeout ({job.get('timeout')}s) ran out"
            break
        argv = [python if a == "{python}" else a for a in task["argv"]]
        log_path = os.path.join(folder, "logs", f"{index}.log")
        part = out + ".part"
        task_started = time.time()
        with open(part, "wb") as stdout, open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(argv, cwd=folder, stdout=stdout, stderr=log,
                                        stdin=subprocess.DEVNULL, env=env)
            except OSError as exc:
                log.write((f"cannot start {argv[0]}: {exc}\n").encode())
                proc = None
            rc, timed_out = None, False
            if proc is not None:
                try:
                    rc = proc.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    timed_out = True
        if timed_out:
            os.remove(part)
            reason = f"the job's timeout ({job.get('timeout')}s) ran out during task {index}"
            break
        text = open(part, "rb").read().decode("utf-8", "replace")
        try:
            output = json.loads(text) if text.strip() else None
        except ValueError:
            output = None
        result = {"task": index, "rc": rc, "output": output, "attempt": attempt,
                  "seconds": round(time.time() - task_started, 3)}
        if rc not in task.get("ok_codes", [0]) or (output is None and task.get("kind") != "step"):
            result["error"] = _tail(log_path)
        write_json(out, result)
        os.remove(part)
    status = {"state": "complete" if reason is None else "partial", "reason": reason,
              "started": started, "finished": time.time(), "attempt": attempt}
    write_json(os.path.join(folder, "status.json"), status)


def _done_tasks(folder, total):
    return [i for i in range(total) if os.path.isfile(os.path.join(folder, "records", f"{i}.json"))]


def cmd_poll(p):
    """done (status.json written), running (our runner holds the lock) or dead (the runner is
    gone without finishing: killed, or the device rebooted)."""
    root = resolve_workdir(p["workdir"])
    folder = job_dir(root, p["job_id"])
    total = len(read_json(os.path.join(folder, "job.json"), {}).get("tasks", []))
    done = len(_done_tasks(folder, total))
    if os.path.isfile(os.path.join(folder, "status.json")):
        return {"state": "done", "tasks_done": done, "tasks": total}
    lock, owner = _lock_state(root)
    if os.path.isfile(os.path.join(folder, "status.json")):
        return {"state": "done", "tasks_done": done, "tasks": total}
    if lock == "held" and owner.get("job_id") == p["job_id"]:
        return {"state": "running", "tasks_done": done, "tasks": total, "owner": owner}
    return {"state": "dead", "tasks_done": done, "tasks": total, "owner": owner,
            "log_tail": _tail(os.path.join(folder, "logs", "runner.log"))}


def cmd_result(p):
    """Everything the job produced so far: status (None while running or after a crash), one
    entry per finished task, the environment captured when it started."""
    root = resolve_workdir(p["workdir"])
    folder = job_dir(root, p["job_id"])
    job = read_json(os.path.join(folder, "job.json"), {})
    tasks = []
    for index in range(len(job.get("tasks", []))):
        path = inside(root, "jobs", p["job_id"], "records", f"{index}.json")
        tasks.append(read_json(path))
    return {"status": read_json(os.path.join(folder, "status.json")), "tasks": tasks,
            "environment": read_json(os.path.join(folder, "environment.json")),
            "attempts": read_json(os.path.join(folder, "attempts.json"), 0),
            "runner_log": _tail(os.path.join(folder, "logs", "runner.log"))}


def cmd_cancel(p):
    """Stop our job if it is the one running (SIGTERM, then SIGKILL), never another job."""
    root = resolve_workdir(p["workdir"])
    job_dir(root, p["job_id"])
    lock, owner = _lock_state(root)
    if lock != "held" or owner.get("job_id") != p["job_id"]:
        return {"cancelled": False}
    pgid = int(owner["pgid"])
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        end = time.time() + wait
        while time.time() < end and _lock_state(root)[0] == "held":
            time.sleep(0.1)
        if _lock_state(root)[0] == "free":
            break
    return {"cancelled": True}


COMMANDS = {"probe": cmd_probe, "have": cmd_have, "commit": cmd_commit, "prepare": cmd_prepare,
            "start": cmd_start, "poll": cmd_poll, "result": cmd_result, "cancel": cmd_cancel}


def main(argv):
    if len(argv) != 3 or argv[1] not in COMMANDS:
        sys.stdout.write(MARK + json.dumps({"ok": False, "error": "usage: agent COMMAND PAYLOAD",
                                            "kind": "usage"}) + "\n")
        return 2
    try:
        payload = json.loads(base64.b64decode(argv[2]).decode("utf-8"))
        out = COMMANDS[argv[1]](payload)
        out = dict(out, ok=True)
    except AgentError as exc:
        out = {"ok": False, "error": exc.message, "hint": exc.hint, "kind": exc.kind}
    except Exception as exc:  # noqa: BLE001 - reported to the caller with its type
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": "crash"}
    sys.stdout.write(MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
