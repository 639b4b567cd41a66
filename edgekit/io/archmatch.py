"""Which torchvision architecture a plain state_dict was saved from: every classification
builder (`torchvision.models.list_models(module=torchvision.models)`) is built on the meta device
(nothing allocated, no weights downloaded) and its keys and shapes compared with the saved ones;
a classifier saved at another width gives `num_classes`. `edgekit inspect` names the match as
the complete `--arch`/`--arch-kwargs` flags instead of a generic example."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def torchvision_matches(state_dict: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """[(arch, arch_kwargs)] of every torchvision classification model that holds exactly the
    state_dict's keys with its shapes (the last Linear's width aside, given as num_classes)."""
    try:
        import torch
        import torchvision
    except ImportError:
        return []
    from edgekit.io.model_build import classifier_width

    saved = {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")}
    if len(saved) != len(state_dict):
        return []
    tops = {k.split(".")[0] for k in saved}
    matches, family_tops = [], {}  # builder module -> its first model's top-level names
    for name in torchvision.models.list_models(module=torchvision.models):
        family = torchvision.models.get_model_builder(name).__module__
        if family in family_tops and family_tops[family] != tops:
            continue  # e.g. resnets (conv1, layer1, fc) for a state_dict of features/classifier
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                model = torchvision.models.get_model(name)
        except Exception:  # noqa: BLE001 - a builder that cannot run on meta is not matched
            continue
        own = model.state_dict()
        family_tops.setdefault(family, {k.split(".")[0] for k in own})
        if own.keys() != saved.keys():
            continue
        mismatched = [k for k, shape in saved.items() if tuple(own[k].shape) != shape]
        if not mismatched:
            matches.append((f"torchvision.models:{name}", {}))
        elif (width := classifier_width(model, state_dict, mismatched)) is not None:
            matches.append((f"torchvision.models:{name}", {"num_classes": width[1]}))
    return matches


def match_file(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """torchvision_matches of the plain state_dict in `path` (loaded weights_only; [] when the
    file is not one)."""
    import torch

    try:
        obj = torch.load(path, map_location="meta", weights_only=True)
    except Exception:  # noqa: BLE001 - not a loadable state_dict: nothing to match
        return []
    if not isinstance(obj, dict):
        return []
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return torchvision_matches(obj)
