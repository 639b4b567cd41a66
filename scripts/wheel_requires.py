"""Check that a wheel's requirements (Requires-Dist without extras) are met by the packages
installed in a site folder, as pip would on the device, without installing anything:

    python scripts/wheel_requires.py edgekit-0.1.0-py3-none-any.whl DEVICE_SITE

Exit 0 when every requirement is met; 2 with one line per unmet requirement (wanted, found)
otherwise. scripts/arm64-device.sh --edgekit-wheel runs it before it puts the wheel on the
emulated device, so a device install that would pull another runtime distribution (PyPI's
`onnxruntime` over JetPack's `onnxruntime-gpu`) or a newer one than the device has is caught."""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(name).decode())
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    # the base install only: requirements behind an extra are the workstation's
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def unmet(wheel: Path, site: Path) -> list[str]:
    found = {canonicalize_name(d.metadata["Name"]): d.version
             for d in metadata.distributions(path=[str(site)])}
    out = []
    for req in wheel_requirements(wheel):
        version = found.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            out.append(f"{req} (the device has {version or 'none'})")
    return out


def main(argv: list[str]) -> int:
    wheel, site = Path(argv[0]), Path(argv[1])
    problems = unmet(wheel, site)
    for line in problems:
        print(f"wheel_requires: {wheel.name} needs {line}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
