"""The seed's reference models: one registry (ZOO) and a factory per model.

Checkpoints record their architecture as "edgekit.zoo:<name>"; `edgekit.io.models.load_model`
imports this module and calls the factory with the recorded kwargs. Importing this module does not
import torch: the factories do, when called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError
from edgekit.spec import FASHION_MNIST_CLASSES, InputSpec

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from edgekit.io.models import ModelBundle
    from edgekit.zoo.records import ShippedRecord


@dataclass(frozen=True)
class ZooEntry:
    """A reference model: how to build it, how long to train it and what top-1 it should reach."""

    name: str
    factory: str
    description: str
    epochs: int
    target_top1: float
    # TrainConfig overrides for this model, on top of TrainConfig's defaults (distillation of a
    # zoo model can start from TrainConfig(**entry.train)).
    train: dict[str, Any] = field(default_factory=dict)


# What each reaches with its recipe (top-1, seconds per epoch, the checkpoint's sha256): measured
# by benchmarks/bench_zoo.py, in the README and benchmarks/results/zoo.json.
ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry("lenet5", "edgekit.zoo:lenet5",
                 "The article's SimpleCNN: conv 1→16 5×5, pool, conv 16→32 5×5, pool, "
                 "fc 512→120→84→10, ReLU.",
                 epochs=3, target_top1=0.88, train={"batch_size": 32}),
        ZooEntry("rowrnn", "edgekit.zoo:rowrnn",
                 "LSTM (hidden 128) reading the image row by row: 28 steps of 28 pixels.",
                 epochs=3, target_top1=0.85),
        ZooEntry("cnn_gru", "edgekit.zoo:cnn_gru",
                 "Hybrid: conv 16/32 3×3 + BatchNorm, its 7×7 map read as 7 rows by a GRU "
                 "(hidden 128), linear classifier.",
                 epochs=3, target_top1=0.90),
        ZooEntry("cnn_lstm", "edgekit.zoo:cnn_lstm",
                 "Hybrid: conv 16/32 3×3 + BatchNorm, its 7×7 map read as 7 rows by an LSTM "
                 "(hidden 128), linear classifier.",
                 epochs=3, target_top1=0.90),
        # The attention models: targets from what the shipped checkpoints reached with this
        # recipe in 3 epochs on 2 shared cores (vit_tiny 0.8533, still rising by 2 points an
        # epoch; conv_attn 0.8985). edgekit/_data/zoo/NAME.json records command and history.
        ZooEntry("vit_tiny", "edgekit.zoo:vit_tiny",
                 "Small ViT: 4×4 patches → 49 tokens of 64, 3 pre-norm blocks of 4 heads "
                 "(MLP 128), mean-pooled, linear classifier.",
                 epochs=3, target_top1=0.85),
        ZooEntry("conv_attn", "edgekit.zoo:conv_attn",
                 "Hybrid: cnn_gru's conv stem, its 7×7 map read as 7 rows projected to 64, "
                 "2 pre-norm transformer blocks of 4 heads instead of the GRU, linear classifier.",
                 epochs=3, target_top1=0.89),
        # The demo's win (`edgekit demo`): LeNet-5 made wide enough that its convolutions are
        # compute-bound at batch 1, where int8 and pruning pay on a CPU; the seed models above are
        # too small for that (their honest answer may be the fp32 original). About 40× lenet5's
        # MACs, so it trains on a 10,000-image stratified subset to stay a few minutes on 2 cores.
        ZooEntry("lenet5_wide", "edgekit.zoo:lenet5_wide",
                 "LeNet-5 widened: conv 1→96 5×5, pool, conv 96→192 5×5, pool, "
                 "fc 3072→128→84→10, ReLU (about 31 M MACs).",
                 epochs=2, target_top1=0.80, train={"limit": 10000}),
    )
}


def lenet5(**kwargs: Any) -> nn.Module:
    """The article's SimpleCNN (see edgekit.zoo.models.LeNet5)."""
    from edgekit.zoo.models import LeNet5

    return LeNet5(**kwargs)


def lenet5_wide(**kwargs: Any) -> nn.Module:
    """LeNet-5 with 96/192 conv channels and fc1 128 (see edgekit.zoo.models.LeNet5)."""
    from edgekit.zoo.models import LeNet5

    return LeNet5(**{"conv1_channels": 96, "conv2_channels": 192, "fc1_features": 128, **kwargs})


def rowrnn(**kwargs: Any) -> nn.Module:
    """Row-by-row LSTM (see edgekit.zoo.models.RowRNN)."""
    from edgekit.zoo.models import RowRNN

    return RowRNN(**kwargs)


def cnn_gru(**kwargs: Any) -> nn.Module:
    """Conv + GRU hybrid (see edgekit.zoo.models.CNNGRU)."""
    from edgekit.zoo.models import CNNGRU

    return CNNGRU(**kwargs)


def cnn_lstm(**kwargs: Any) -> nn.Module:
    """Conv + LSTM hybrid (see edgekit.zoo.models.CNNLSTM)."""
    from edgekit.zoo.models import CNNLSTM

    return CNNLSTM(**kwargs)


def vit_tiny(**kwargs: Any) -> nn.Module:
    """Small ViT with patch 4 on 28×28 (see edgekit.zoo.attention.ViTTiny)."""
    from edgekit.zoo.attention import ViTTiny

    return ViTTiny(**kwargs)


def conv_attn(**kwargs: Any) -> nn.Module:
    """Conv stem + transformer encoder over the rows (see edgekit.zoo.attention.ConvAttn)."""
    from edgekit.zoo.attention import ConvAttn

    return ConvAttn(**kwargs)


def resnet18_small(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """torchvision resnet18 for 28×28 images: a 3×3 stride-1 first conv, no max-pool, one input
    channel (about 456 M MACs at 1×1×28×28). The ResNet-18 of the optimize benchmark; not in
    ZOO (it is trained by the benchmark, not by `edgekit zoo train`)."""
    import torchvision
    from torch import nn

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


# Every "module:factory" of this package a model file may name: the ZOO's and the models the
# benchmarks train outside it (io/archs.py lists them as safe to build from a file).
ARCHITECTURES: tuple[str, ...] = (*(e.factory for e in ZOO.values()),
                                  "edgekit.zoo:resnet18_small")


def get_entry(name: str) -> ZooEntry:
    """The registry entry for `name`; an unknown name is an input error listing the known ones."""
    if name not in ZOO:
        raise InputError(f"unknown zoo model {name!r}",
                         hint=f"choose one of: {', '.join(ZOO)} (see `edgekit zoo list`)")
    return ZOO[name]


def default_spec(name: str) -> InputSpec:
    """The input contract of the zoo models: one 1×28×28 Fashion-MNIST image, normalised."""
    get_entry(name)
    return InputSpec(shape=(1, 1, 28, 28), mean=(0.2860,), std=(0.3530,),
                     class_names=FASHION_MNIST_CLASSES)


def shipped_checkpoint(name: str) -> Path | None:
    """The trained checkpoint of zoo model `name` shipped with edgekit (edgekit/_data/zoo/
    NAME.pt, trained with the zoo's default recipe; NAME.json records its training config, test
    top-1 and sha256), or None when none ships. A file whose sha256 differs from the record is
    refused rather than used."""
    from edgekit.resources import shipped_dir

    get_entry(name)
    folder = shipped_dir("zoo")
    path, record_path = folder / f"{name}.pt", folder / f"{name}.json"
    if not (path.is_file() and record_path.is_file()):
        return None
    from edgekit.io.files import sha256_file

    record = json.loads(record_path.read_text())
    if sha256_file(path) != record.get("sha256"):
        raise InputError(f"the shipped checkpoint {path} does not match its recorded sha256",
                         hint="reinstall edgekit, or retrain it with `edgekit zoo train "
                              f"{name} -o FILE`")
    return path


def shipped_record(name: str) -> ShippedRecord | None:
    """What NAME.json records about the shipped checkpoint (None when none ships)."""
    from edgekit.resources import shipped_dir

    record_path = shipped_dir("zoo") / f"{name}.json"
    return json.loads(record_path.read_text()) if record_path.is_file() else None


def build(name: str, **kwargs: Any) -> ModelBundle:
    """A freshly initialised zoo model in a ModelBundle that records how to rebuild it."""
    from edgekit.io.models import ModelBundle, build_arch

    entry = get_entry(name)
    model = build_arch(entry.factory, kwargs, trusted=True)
    return ModelBundle(model, default_spec(name), entry.factory, dict(kwargs), meta={"name": name})


__all__ = ["ARCHITECTURES", "ZOO", "ZooEntry", "build", "cnn_gru", "cnn_lstm", "conv_attn", "default_spec",
           "get_entry", "lenet5", "lenet5_wide", "resnet18_small", "rowrnn", "shipped_checkpoint",
           "shipped_record", "vit_tiny"]
