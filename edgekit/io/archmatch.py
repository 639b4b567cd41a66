"""Which torchvision architecture a plain state_dict was saved from: every classification
builder (`torchvision.models.list_models(module=torchvision.models)`) is built on the meta device
(nothing allocated, no weights downloaded) and its keys and shapes compared with the saved ones;
a classifier saved at another width gives `num_classes`. `edgekit inspect` names the match as
the complete `--arch`/`--arch-kwargs` flags instead of a generic example."""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path
from typing import Any

GENERIC_HINT = "pass --arch module:factory, e.g. --arch torchvision.models:resnet18"


def arch_flags(arch: str, kwargs: dict[str, Any]) -> str:
    """The --arch (and --arch-kwargs) flags of a match, as they are typed."""
    return f"--arch {arch}" + (f" --arch-kwargs {shlex.quote(json.dumps(kwargs))}"
                               if kwargs else "")


def arch_hint(matches: list[tuple[str, dict[str, Any]]]) -> str:
    """The hint of a plain state_dict given without --arch: the complete flags of its one match,
    every match when several fit, the generic example when none does."""
    if not matches:
        return GENERIC_HINT
    if len(matches) == 1:
        return f"its every key and shape matches: pass {arch_flags(*matches[0])}"
    return ("its keys and shapes match " + " and ".join(arch_flags(*m) for m in matches)
            + ": pass the one it was saved from")


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
