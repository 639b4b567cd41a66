"""Top-1 of a torch model on a Dataset (the compress table's accuracy column). Needs torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def torch_logits(model: Any, x: np.ndarray, batch_size: int = 500,
                 advance: Any = None) -> np.ndarray:
    """Logits of `model` on `x`, batch by batch; `advance(n)` (a progress bar's) after each."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device  # a model training on a GPU
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            outs.append(model(batch).float().cpu().numpy())
            if advance is not None:
                advance(len(batch))
    model.train(was_training)
    return np.concatenate(outs)


def torch_top1(model: Any, dataset: Any, batch_size: int = 500,
               description: str | None = None) -> float:
    """Fraction of `dataset` whose argmax logit equals its label; with `description`, under a
    progress bar of that name."""
    from edgekit.errors import DataError, MissingLabelsError

    if dataset.y is None:
        raise MissingLabelsError(f"{dataset.source} has no labels; top-1 needs them")
    if len(dataset) == 0:
        raise DataError(f"{dataset.source} is empty")
    from edgekit.validate.accuracy import top1

    if description is None:
        return top1(torch_logits(model, dataset.x, batch_size), dataset.y)
    from edgekit.progress import progress

    with progress(description, total=len(dataset)) as advance:
        accuracy = top1(torch_logits(model, dataset.x, batch_size, advance), dataset.y)
        advance(0, top1=f"{accuracy:.4f}")
    return accuracy
