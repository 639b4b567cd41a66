"""The seed's reference models: train each with the zoo recipe (`edgekit zoo train NAME`, the
registry's epochs and TrainConfig overrides, seed 0, 2 threads) on the Fashion-MNIST train split
and measure top-1 on the whole test split with the last epoch's weights (no epoch is chosen by
its test top-1). Writes the checkpoints every other zoo-model benchmark measures
(.cache/zoo/NAME.pt) and records, per model: top-1, parameters, seconds per epoch, the
checkpoint's sha256 and its TrainConfig.

Run: `.venv/bin/python benchmarks/run.py zoo` (about 3 minutes on an idle 2-core machine:
3 epochs each, 3-4 s per epoch for lenet5 to about 20 s for cnn_lstm). `--quick`: 1 epoch on 1,000
images, top-1 on 500.
"""

from __future__ import annotations

import time
from typing import Any

from common import QUICK, ZOO, checkpoint_provenance, md_table, write_results

THREADS = 2
MODELS = ("lenet5", "rowrnn", "cnn_gru", "cnn_lstm")


def train(name: str) -> dict[str, Any]:
    """`edgekit zoo train NAME --threads 2 -o ZOO/NAME.pt` as a library call; its summary."""
    from edgekit.io.models import save_checkpoint
    from edgekit.zoo import get_entry
    from edgekit.zoo.train import TrainConfig, train_zoo_model

    entry = get_entry(name)
    quick = {"epochs": 1, "limit": 1000} if QUICK else {}
    cfg = TrainConfig(**{"epochs": entry.epochs, **entry.train, "seed": 0,
                         "num_threads": THREADS, **quick})
    bundle, summary = train_zoo_model(name, cfg, eval_limit=500 if QUICK else None)
    path = save_checkpoint(bundle, ZOO / f"{name}.pt")
    epochs = summary["history"]["epochs"]
    return {"model": name, "description": entry.description, "target_top1": entry.target_top1,
            "test_top1": summary["test_top1"], "test_images": summary["test_images"],
            "parameters": summary["parameters"], "epochs": len(epochs),
            "epoch_seconds": [e["seconds"] for e in epochs], "train_config": cfg.model_dump(),
            "checkpoint": checkpoint_provenance(path)}


def readme_section(data: dict[str, Any]) -> str:
    """README section zoo (from benchmarks/results/zoo.json)."""
    rows, threads = data["models"], data["threads"]
    table = md_table(["model", "what it is", "params", "test top-1", "target"],
                     [[r["model"], r["description"], f"{r['parameters']:,}",
                       f"{r['test_top1']:.4f}", f"≥ {r['target_top1']:.2f}"] for r in rows])
    cfg = rows[0]["train_config"]
    per_epoch = {r["model"]: sum(r["epoch_seconds"]) / len(r["epoch_seconds"]) for r in rows}
    fastest, slowest = min(per_epoch, key=per_epoch.get), max(per_epoch, key=per_epoch.get)
    epochs = sorted({r["epochs"] for r in rows})
    batches = ", ".join(f"{r['model']} {r['train_config']['batch_size']}" for r in rows)
    return (
        f"### The seed's models (`edgekit zoo train NAME -o .cache/zoo/NAME.pt`, "
        f"{'/'.join(map(str, epochs))} epochs, {threads} CPU threads)\n\n"
        + table
        + f"\nTop-1 on {rows[0]['test_images']:,} test images with the last epoch's weights. "
        f"Recipe: {cfg['optimizer'].upper() if cfg['optimizer'] == 'sgd' else 'AdamW'} "
        f"(lr {cfg['lr']:g}, weight decay {cfg['weight_decay']:g} off biases/norms), "
        f"{cfg['warmup_epochs']:g} epoch linear warm-up then cosine decay, random crop with "
        f"{cfg['crop_padding']} pixel(s) of padding"
        + (" and horizontal flip" if cfg["hflip"] else "")
        + f"; batch size {batches}. One epoch took {per_epoch[fastest]:.1f} s ({fastest}) to "
        f"{per_epoch[slowest]:.1f} s ({slowest}). Checkpoints' sha256 and TrainConfig: "
        "[benchmarks/results/zoo.json](benchmarks/results/zoo.json).\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"zoo": ("zoo", readme_section)}


def main() -> dict[str, Any]:
    rows = []
    for name in MODELS:
        began = time.perf_counter()
        rows.append(train(name))
        print(f"   {name}: top-1 {rows[-1]['test_top1']:.4f}, "
              f"{time.perf_counter() - began:.0f} s", flush=True)
    data: dict[str, Any] = {"threads": THREADS, "models": rows}
    markdown = readme_section(data)
    data["readme"] = {"zoo": markdown}
    write_results("zoo", data, markdown,
                  checkpoints={r["model"]: r["checkpoint"] for r in rows})
    return data


if __name__ == "__main__":
    main()
