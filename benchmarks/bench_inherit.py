"""Inherit, don't restart (issue 28 part 3): does a candidate pruned further than an already
distilled one reach the same top-1 in fewer steps when it starts from that one's distilled
weights (pruned further) than from the original's?

For a zoo model (default LeNet-5 for Fashion-MNIST, its shipped checkpoint): distil the parent
(prune P) from the original, then the child (prune C > P) two ways - pruned from the original
(as today) and pruned further from the distilled parent (edgekit.optimize.inherit) - for 0..E
epochs of N training images each, and print the test top-1 (on --eval-limit test images) after
each schedule. Run:

    EDGEKIT_NO_PROGRESS=1 python benchmarks/bench_inherit.py --model lenet5 --parent 0.3 \
        --child 0.5 --limit 2000 --epochs 3 --seeds 3 --eval-limit 10000
"""

from __future__ import annotations

import argparse
import copy
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--parent", type=float, default=0.3)
    ap.add_argument("--child", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=2000, help="training images per epoch")
    ap.add_argument("--parent-limit", type=int, default=None, help="default: --limit")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--parent-epochs", type=int, default=1)
    ap.add_argument("--eval-limit", type=int, default=2000)
    ap.add_argument("--round-to", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3, help="children distilled with seeds 0..S-1")
    args = ap.parse_args()

    import torch

    from edgekit.data import load_dataset, load_raw
    from edgekit.io.models import load_model
    from edgekit.metrics import torch_top1
    from edgekit.optimize.inherit import inherit
    from edgekit.passes.distill import distillation_loss
    from edgekit.passes.prune import PruneOptions, prune_model
    from edgekit.zoo import shipped_checkpoint
    from edgekit.zoo.teacher import TeacherLogits
    from edgekit.zoo.train import FitOptions, TrainConfig, fit

    torch.set_num_threads(args.threads)
    original = load_model(shipped_checkpoint(args.model))
    raw = load_raw("fashion-mnist:train")
    test = load_dataset("fashion-mnist:test", original.spec, limit=args.eval_limit, seed=0)

    def pruned(bundle, ratio):
        out = copy.deepcopy(bundle)
        prune_model(out.model, out.spec, ratio=ratio,
                    options=PruneOptions(importance="l1", round_to=args.round_to))
        out.model.eval()
        return out

    def distil(bundle, epochs, limit, seed=0):
        out = copy.deepcopy(bundle)
        start = time.perf_counter()
        fit(out.model, raw, out.spec, None,
            TrainConfig(epochs=epochs, limit=limit, lr=3e-3, batch_size=64, warmup_epochs=0.1,
                        seed=seed),
            options=FitOptions(loss_fn=distillation_loss(2.0, 0.5),
                               teacher=TeacherLogits(original.model)),
            description="distil")
        return out, time.perf_counter() - start

    parent, parent_s = distil(pruned(original, args.parent), args.parent_epochs,
                              args.parent_limit or args.limit)
    direct0 = pruned(original, args.child)
    inherited0 = inherit(parent, direct0)
    assert inherited0 is not None, "the child's widths could not be matched"
    steps_per_epoch = -(-args.limit // 64)
    rows = {"model": args.model, "parent": args.parent, "child": args.child,
            "limit": args.limit, "original_top1": torch_top1(original.model, test),
            "parent_top1": torch_top1(parent.model, test), "parent_s": round(parent_s, 1),
            "schedules": []}
    for epochs in range(0, args.epochs + 1):
        row = {"epochs": epochs, "steps": epochs * steps_per_epoch}
        for label, start in (("from_original", direct0), ("inherited", inherited0)):
            tops, secs = [], []
            for seed in range(args.seeds if epochs else 1):
                model, seconds = distil(start, epochs, args.limit, seed) if epochs \
                    else (start, 0.0)
                tops.append(torch_top1(model.model, test))
                secs.append(seconds)
            row[label] = round(sum(tops) / len(tops), 4)
            row[f"{label}_each"] = [round(t, 4) for t in tops]
            row[f"{label}_s"] = round(sum(secs) / len(secs), 1)
        rows["schedules"].append(row)
        print(json.dumps(row), flush=True)
    final = rows["schedules"][-1]["from_original"]
    rows["inherited_steps_to_match"] = next(
        (r["steps"] for r in rows["schedules"] if r["inherited"] >= final - 0.001), None)
    rows["from_original_steps"] = rows["schedules"][-1]["steps"]
    print(json.dumps({k: v for k, v in rows.items() if k != "schedules"}))


if __name__ == "__main__":
    main()
