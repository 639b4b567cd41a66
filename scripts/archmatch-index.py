"""Write edgekit/_data/archmatch/index.json: every torchvision classification model and timm
model of the installed versions, built on the meta device, with its key names' digest and
top-level names (edgekit.io.archmatch). A search with these versions then builds only its
matches; with other versions it fills the user's own index as it goes. Rerun it when the pinned
torchvision or timm changes:  python scripts/archmatch-index.py"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edgekit.io.archmatch import INDEX_FORMAT, full_index
from edgekit.io.files import atomic_write_text

TARGET = Path(__file__).resolve().parent.parent / "edgekit" / "_data" / "archmatch" / "index.json"


def main() -> int:
    start, count = time.monotonic(), [0]

    def progress(library: str, name: str) -> None:
        count[0] += 1
        if count[0] % 100 == 0:
            print(f"{count[0]} models ({time.monotonic() - start:.0f} s): {library}:{name}",
                  file=sys.stderr)

    index = full_index(on_model=progress)
    atomic_write_text(TARGET, json.dumps({"format": INDEX_FORMAT, "libraries": index},
                                         separators=(",", ":"), sort_keys=True) + "\n")
    failed = sum("error" in r for entry in index.values() for r in entry["models"].values())
    print(f"{TARGET}: {count[0]} models, {failed} that cannot be built on meta, "
          f"{time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
