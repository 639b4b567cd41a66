"""The teacher's logits, computed once: distillation's teacher forward pass cached on disk.

Distilling many candidates from one original (edgekit optimize) ran the same teacher on the same
images for every candidate and every epoch. The trainer's augmentation (random crop, flip) and
its batch order are drawn from a generator seeded by `TrainConfig.seed` and depend on nothing
else than the seed, the number of training images, the batch size and the augmentation
settings: never on the student. So epoch e of every run with the same (teacher weights, training
inputs after preprocessing, seed, batch size, augmentation, precision) shows the teacher the
same images in the same order, and its logits for that epoch are one array, cached per epoch
(`epoch-001.npy`, float32, N × classes, in the order the trainer sees them, read back
memory-mapped).

The key is a sha256 of: the teacher's weights (its own sha256 over every tensor), the training
inputs as the model sees them (sha256 of the preprocessed array, or of a streamed folder's
files, sizes and mtimes), the InputSpec, the seed, batch size, crop padding and flip, and the
precision. A cache made by another model or preprocessing has another key and is not used; a
folder whose recorded key or shape disagrees is refused and rebuilt. The cache lives under
`<edgekit cache>/teacher/` and is bounded ($EDGEKIT_TEACHER_CACHE_MB, 4096 by default; 0 turns
it off): the least recently used keys go first, and a run whose logits would not fit runs its
teacher on the fly, and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.events import emit
from edgekit.io.files import cache_dir
from edgekit.zoo.accel import TrainPlan, release_model
from edgekit.zoo.records import RunKey, TeacherRecord

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

CACHE_FORMAT = 1
DEFAULT_BOUND_MB = 4096.0


def bound_bytes() -> int:
    """The cache's size bound ($EDGEKIT_TEACHER_CACHE_MB; 0 turns the cache off)."""
    value = os.environ.get("EDGEKIT_TEACHER_CACHE_MB")
    try:
        mb = float(value) if value not in (None, "") else DEFAULT_BOUND_MB
    except ValueError:
        mb = DEFAULT_BOUND_MB
    return int(max(mb, 0.0) * 2**20)


def teacher_root() -> Path:
    return cache_dir() / "teacher"


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's class and weights (every parameter and buffer: name, dtype, shape,
    bytes)."""
    import torch

    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        try:
            h.update(t.numpy().view(np.uint8))
        except (TypeError, RuntimeError):  # a dtype numpy lacks (float8, ...)
            h.update(t.float().numpy().view(np.uint8))
    return h.hexdigest()


def array_digest(x: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{a.dtype}|{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def files_digest(files: list[Path]) -> str:
    """sha256 of a streamed folder's files (path, size, mtime): what decodes to the inputs."""
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class TeacherLogits:
    """The teacher's logits for one training run: read from the cache where it holds them,
    else computed (and recorded for the next run). `forwards` counts the teacher's forward
    passes this run made."""

    def __init__(self, teacher: nn.Module, *, cache: bool = True) -> None:
        self.teacher = teacher
        self.use_cache = cache
        self.forwards = 0
        self.seconds = 0.0  # spent in the teacher's forward passes (and reading its cache)
        self.key: dict[str, Any] | None = None
        self.folder: Path | None = None
        self.rows = 0
        self.epochs = 1
        self.plan = TrainPlan()
        self.why_not: str | None = None if cache else "turned off"
        self.cached_epochs: list[int] = []
        self.built_epochs: list[int] = []
        self._reading: np.ndarray | None = None  # this epoch's cached logits (memory-mapped)
        self._writing: np.ndarray | None = None  # this epoch's logits as computed
        self.engine: str | None = None  # what computes the logits (teacher_engine.choose)
        self._session: Any = None  # its OrtTeacher, when ONNX Runtime computes them

    # ------------------------------------------------------------ the run
    def start(self, plan: TrainPlan, run_key: RunKey, rows: int, epochs: int) -> None:
        """Before the first step: the teacher goes where its `plan` says (the student's device,
        the teacher's own precision and layout); the key is made from the teacher's weights,
        its precision and the run's inputs and augmentation (`run_key`)."""
        self.plan, self.rows, self.epochs = plan, rows, epochs
        self.teacher.eval()
        plan.place_model(self.teacher)
        if self.why_not is None and bound_bytes() == 0:
            self.why_not = "the cache is off ($EDGEKIT_TEACHER_CACHE_MB=0)"
        if self.why_not is not None:
            emit(f"note: the teacher runs on the fly ({self.why_not})")
            return
        self.key = {"format": CACHE_FORMAT, "teacher": model_digest(self.teacher),
                    "precision": plan.precision, **run_key}
        self.folder = teacher_root() / _digest(self.key)[:24]

    def logits(self, epoch: int, offset: int, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (float32) for the batch at `offset` of `epoch` (x: that batch,
        on the training device)."""
        start = time.perf_counter()
        try:
            return self._logits(offset, x)
        finally:
            self.seconds += time.perf_counter() - start

    def _logits(self, offset: int, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self._reading is not None:
            rows = np.array(self._reading[offset:offset + len(x)])
            return torch.from_numpy(rows).to(x.device)
        from edgekit.zoo.teacher_engine import choose, torch_forward

        if self.engine is None:  # the first batch computed: torch, timed, and the choice
            out, self._session, self.engine = choose(self.teacher, self.plan, x,
                                                     self.rows * max(1, self.epochs))
            if self._session is not None:
                emit(f"note: the teacher's logits are computed by {self.engine}")
        elif self._session is not None:
            out = self._session(x)
        else:
            out = torch_forward(self.teacher, self.plan, x)
        self.forwards += 1
        if self.key is not None:
            if self._writing is None:
                self._begin_writing(out.shape[1:])
            if self._writing is not None:
                self._writing[offset:offset + len(x)] = out.detach().cpu().numpy()
        return out

    def begin_epoch(self, epoch: int) -> None:
        """Open this epoch's cached logits when they are there (and whole), else compute."""
        self._reading = self._writing = None
        if self.key is None or self.folder is None:
            return
        path = self.folder / f"epoch-{epoch:03d}.npy"
        if not path.is_file():
            return
        recorded = _read_key(self.folder)
        if recorded != self.key:
            emit(f"note: teacher cache {self.folder.name} was made for another teacher, data "
                     "or preprocessing (its key differs): refused, rebuilt")
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        try:
            cached = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            cached = None
        if cached is None or cached.ndim != 2 or cached.shape[0] != self.rows or \
                cached.dtype != np.float32:
            emit(f"note: teacher cache {path} is not whole: refused, rebuilt")
            with contextlib.suppress(OSError):
                path.unlink()
            return
        self._reading = cached
        self.cached_epochs.append(epoch)
        with contextlib.suppress(OSError):
            os.utime(self.folder)  # recently used: evicted last

    def end_epoch(self, epoch: int) -> None:
        """Write this epoch's computed logits (temp file, then renamed) and keep the bound."""
        writing, self._writing, self._reading = self._writing, None, None
        if writing is None or self.folder is None:
            return
        if _read_key(self.folder) != self.key:  # new, or another key's files: start it afresh
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.folder / "key.json",
                          lambda fh: fh.write(json.dumps(self.key, indent=1, sort_keys=True)
                                              .encode()))
        _write_atomic(self.folder / f"epoch-{epoch:03d}.npy",
                      lambda fh: np.save(fh, writing, allow_pickle=False))
        self.built_epochs.append(epoch)
        evict(keep=self.folder)

    def finish(self) -> None:
        """After the run: the teacher back on the CPU, as the rest of edgekit expects."""
        self._reading = self._writing = self._session = None
        release_model(self.teacher)

    def record(self) -> TeacherRecord:
        """What the manifest records: where the logits came from and what the teacher ran."""
        out: TeacherRecord = {"teacher_forwards": self.forwards,
                               "teacher_s": round(self.seconds, 3),
                               "teacher_precision": self.plan.label}
        if self.engine is not None:
            out["teacher_engine"] = self.engine
        if self.key is None:
            out["teacher_cache"] = f"off: {self.why_not}"
            return out
        out.update(teacher_cache=self.folder.name if self.folder else None,
                   cached_epochs=self.cached_epochs, built_epochs=self.built_epochs)
        if self.why_not:
            out["teacher_cache_note"] = self.why_not
        return out

    def _begin_writing(self, per_image: tuple[int, ...]) -> None:
        if len(per_image) != 1:  # not (N, classes) logits: nothing this cache holds
            self.why_not = f"the teacher's output is {tuple(per_image)} per image, not logits"
            self.key = None
            return
        need = self.rows * int(per_image[0]) * 4 * max(1, self.epochs)
        if need > bound_bytes():
            self.why_not = (f"its logits for {self.rows} images × {self.epochs} epochs "
                            f"({need / 2**20:.0f} MB) exceed the cache bound "
                            f"({bound_bytes() / 2**20:.0f} MB, $EDGEKIT_TEACHER_CACHE_MB)")
            emit(f"note: the teacher runs on the fly: {self.why_not}")
            self.key = None
            return
        self._writing = np.zeros((self.rows, int(per_image[0])), np.float32)


def _read_key(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "key.json").read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def cache_size(root: Path | None = None) -> int:
    root = root or teacher_root()
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


def evict(keep: Path | None = None, root: Path | None = None) -> list[str]:
    """Remove the least recently used keys until the cache is within its bound (`keep`, the
    run's own, last). Returns the names removed."""
    root = root or teacher_root()
    if not root.is_dir():
        return []
    folders = sorted((d for d in root.iterdir() if d.is_dir()),
                     key=lambda d: (d == keep, d.stat().st_mtime))
    sizes = {d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in folders}
    total, removed = sum(sizes.values()), []
    for d in folders:
        if total <= bound_bytes() or d == keep:
            break
        shutil.rmtree(d, ignore_errors=True)
        total -= sizes[d]
        removed.append(d.name)
    return removed


def run_key_for(x_all: np.ndarray | None, files: list[Path] | None, spec: Any, cfg: Any,
                rows: np.ndarray) -> RunKey:
    """What, besides the teacher and precision, decides the images the teacher sees: the inputs
    after preprocessing, the spec, the rows trained on and the seeded order and augmentation."""
    inputs = array_digest(x_all) if x_all is not None else \
        files_digest([files[i] for i in rows]) if files is not None else None
    return {"inputs": inputs, "rows": len(rows), "rows_digest": array_digest(rows),
            "spec": spec.to_json() if hasattr(spec, "to_json") else str(spec),
            "seed": cfg.seed, "batch_size": cfg.batch_size, "crop_padding": cfg.crop_padding,
            "hflip": cfg.hflip}
