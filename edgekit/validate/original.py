"""(issue 27) The original a winner folder of `edgekit optimize` (OUT/<device>/) was made from:
such a folder holds the optimized artifact alone, no fp32 model to compare with, but its
manifest's optimize stage records the checkpoint (path and sha256) and how to build it (arch,
arch_kwargs). When that file is still there with the same sha256, its logits on the eval set are
the reference of the gate's drop and agreement; when not, the validation says why it has none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RecordedOriginal:
    """The original's file when it can be the reference (`path`), and the line that says which
    reference the validation uses or why there is none (`note`)."""

    path: Path | None
    note: str
    config: dict[str, Any]


def recorded_original(target: str | Path) -> RecordedOriginal | None:
    """The original the optimize stage of `target`'s manifest records (None without one)."""
    from edgekit.io.files import sha256_file
    from edgekit.io.manifest import MANIFEST_NAME, Manifest

    target = Path(target)
    folder = target if target.is_dir() else target.parent
    if not (folder / MANIFEST_NAME).is_file():
        return None
    stage = Manifest(folder).stage("optimize")
    checkpoint = ((stage or {}).get("inputs") or {}).get("checkpoint") or {}
    if not checkpoint.get("path") or not checkpoint.get("sha256"):
        return None
    path, sha = Path(checkpoint["path"]), checkpoint["sha256"]
    config = stage.get("config") or {}
    cannot = ("no reference for the drop: the original this folder was optimized from, {}, {} "
              "(only finite outputs and the budget's other checks are measured; validate the "
              "folder optimize built it in, or pass the original to `edgekit validate` "
              "through a compress/export folder)")
    if not path.is_file():
        return RecordedOriginal(None, cannot.format(path, "is not there any more"), config)
    if sha256_file(path) != sha:
        return RecordedOriginal(None, cannot.format(
            path, f"has changed since (sha256 {sha[:12]} recorded)"), config)
    return RecordedOriginal(path, f"reference for the drop: the original {path} (sha256 "
                            f"{sha[:12]}, as optimize recorded it)", config)


def original_logits(original: RecordedOriginal, x: np.ndarray, spec: Any) -> np.ndarray:
    """The original's logits on the eval set's inputs `x` (already preprocessed for `spec`), in
    PyTorch; an arch the manifest names is built as a file's arch (untrusted)."""
    import torch

    from edgekit.io.models import load_model

    bundle = load_model(original.path, arch=original.config.get("arch"),
                        arch_kwargs=original.config.get("arch_kwargs") or None,
                        input_shape=tuple(spec.shape),
                        preprocessing={"mean": list(spec.mean), "std": list(spec.std)},
                        trusted_arch=False)
    model = bundle.model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + 256],
                                                                   dtype=np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
