"""The output folder's `manifest.json`: one entry per stage, saying what went in (sha256), the
config used, what came out, the metrics measured and the library versions. Later stages
(`export OUT/`, `bench OUT/`, `validate OUT/`) find their inputs here."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import InputError
from edgekit.io.files import atomic_write_json, sha256_file
from edgekit.kinds import weights_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "edgekit.manifest/1"


def library_versions(*names: str) -> dict[str, str]:
    """Versions of the named distributions that are installed (absent ones are left out)."""
    from importlib import metadata

    versions = {"edgekit": __version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class Manifest:
    """Read-modify-write access to OUT/manifest.json; every save is atomic."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{self.path} is not valid JSON ({exc})",
                    hint="remove the output folder or choose another -o",
                ) from None
            if self.data.get("format") != MANIFEST_FORMAT:
                raise InputError(
                    f"{self.path} is not an edgekit manifest",
                    hint="choose an empty or edgekit-made output folder",
                )
        else:
            self.data = {"format": MANIFEST_FORMAT, "stages": []}

    @property
    def stages(self) -> list[dict[str, Any]]:
        return self.data["stages"]

    def add_stage(
        self,
        stage: str,
        *,
        inputs: dict[str, str | Path] | None = None,
        config: dict[str, Any] | None = None,
        outputs: list[dict[str, Any]] | None = None,
        metrics: dict[str, Any] | None = None,
        versions: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Record a finished stage (replacing an earlier record of the same name) and save."""
        record = {
            "stage": stage,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": {
                name: {"path": str(p), "sha256": sha256_file(p)} for name, p in (inputs or {}).items()
            },
            "config": config or {},
            "outputs": [self._describe(o) for o in outputs or []],
            "metrics": metrics or {},
            "versions": versions or library_versions(),
        }
        self.data["stages"] = [s for s in self.stages if s["stage"] != stage] + [record]
        self.save()
        return record

    def _describe(self, output: dict[str, Any]) -> dict[str, Any]:
        out = dict(output)
        path = self.out_dir / out["path"]
        if path.is_file():
            out.setdefault("sha256", sha256_file(path))
            out.setdefault("bytes", path.stat().st_size)
            weights = weights_file(path, existing=True)  # an IR's .bin, an ONNX model's .data
            if weights is not None:
                out.setdefault("weights_file", {"path": weights.name, "sha256": sha256_file(weights),
                                           "bytes": weights.stat().st_size})
        return out

    def forget(self, keep: Callable[[dict[str, Any]], bool] = lambda stage: False, *,
               save: bool = True) -> list[dict[str, Any]]:
        """Drop every stage `keep` rejects, in one atomic save (or none, for the caller's next
        save): a new build of the folder first invalidates what an earlier one recorded, so a run
        killed half-way never leaves old artifacts listed under the new settings. The files
        stay; the manifest no longer vouches for them. Returns the stages dropped."""
        dropped = [s for s in self.stages if not keep(s)]
        self.data["stages"] = [s for s in self.stages if keep(s)]
        if save:
            self.save()
        return dropped

    def stage(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.stages if s["stage"] == name), None)

    def artifacts(self) -> list[dict[str, Any]]:
        """Every output of every stage whose file still exists, in stage order."""
        found = []
        for s in self.stages:
            for o in s["outputs"]:
                if (self.out_dir / o["path"]).exists():
                    found.append({**o, "stage": s["stage"]})
        return found

    def find(self, **match: Any) -> dict[str, Any] | None:
        """The last artifact whose fields equal `match` (e.g. format="onnx", precision="fp32")."""
        hits = [a for a in self.artifacts() if all(a.get(k) == v for k, v in match.items())]
        return hits[-1] if hits else None

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

