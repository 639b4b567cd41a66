#!/usr/bin/env python3
"""Write Fashion-MNIST as RGB JPEG class folders, the layout a user's own data has:

    OUT/train/T-shirt_top/00000.jpg ... OUT/test/Ankle boot/...

from the IDX files (/usr/share/datasets/fashion-mnist, or --data-dir / $EDGEKIT_DATA). Each
28×28 grey image is resized (bicubic) to --size (64) and saved as RGB, so that an RGB model and
every edgekit step (train, calib, eval, validate) read it as they would read a photo folder.

    python scripts/fashion-mnist-to-folders.py                    # data/fashion-mnist-64/
    python scripts/fashion-mnist-to-folders.py --limit 200 -o /tmp/fm-tiny   # 200 per split

Writes atomically per split (into SPLIT.part, renamed when complete); an existing split is kept.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from edgekit.data import load_raw
    from edgekit.data.dataset import stratified_indices
    from edgekit.spec import FASHION_MNIST_CLASSES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "data" / "fashion-mnist-64")
    parser.add_argument("--size", type=int, default=64, help="side of the written images")
    parser.add_argument("--limit", type=int, default=None,
                        help="a stratified sample of this many images per split")
    parser.add_argument("--data-dir", default=None, help="folder with the four IDX files")
    parser.add_argument("--quality", type=int, default=92, help="JPEG quality")
    args = parser.parse_args(argv)
    folders = [name.replace("/", "_") for name in FASHION_MNIST_CLASSES]  # "T-shirt/top"
    for split in ("train", "test"):
        final = args.output / split
        if final.exists():
            print(f"{final} exists; kept")
            continue
        raw = load_raw(f"fashion-mnist:{split}", data_dir=args.data_dir)
        keep = stratified_indices(raw.labels, args.limit, 0) if args.limit else range(len(raw))
        part = args.output / f"{split}.part"
        shutil.rmtree(part, ignore_errors=True)
        for name in folders:
            (part / name).mkdir(parents=True)
        for n, i in enumerate(keep):
            img = Image.fromarray(raw.images[i]).resize((args.size, args.size), Image.BICUBIC)
            img.convert("RGB").save(part / folders[int(raw.labels[i])] / f"{i:05d}.jpg",
                                    quality=args.quality)
            if n % 10000 == 9999:
                print(f"{split}: {n + 1} images", flush=True)
        part.rename(final)
        print(f"wrote {final} ({len(keep)} images, {len(folders)} classes, {args.size}x{args.size} RGB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
