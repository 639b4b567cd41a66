"""The zoo's attention models: shapes, the row embedding's layout, the shipped checkpoints, and
the arch allowlist."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgekit.zoo import ZOO, build, shipped_checkpoint, shipped_record  # noqa: E402
from edgekit.zoo.models import rows_as_sequence  # noqa: E402

NAMES = ("vit_tiny", "conv_attn")


def test_vit_tiny_reads_49_patch_tokens_with_4_heads():
    model = build("vit_tiny").model.eval()
    tokens = {}
    model.blocks[0].register_forward_hook(lambda m, i, o: tokens.__setitem__("x", o.shape))
    model(torch.zeros(2, 1, 28, 28))
    assert tokens["x"] == (2, 49, 64)
    assert len(model.blocks) == 3
    for block in model.blocks:
        assert block.attn.num_heads == 4 and block.attn.head_dim == 16
        assert block.attn.qkv.out_features == 3 * 64 and block.mlp.fc1.out_features == 128


def test_conv_attn_embeds_each_row_like_a_linear_on_the_row_sequence():
    """embed is a (1, W) conv: the same map as a Linear over rows_as_sequence's channel-major
    C·W row features (SEQUENCE_LAYOUT), so the model is the attention counterpart of cnn_gru."""
    torch.manual_seed(0)
    model = build("conv_attn").model.eval()
    fmap = torch.randn(2, 32, 7, 7)
    as_conv = model.embed(fmap).flatten(2).transpose(1, 2)
    weight = model.embed.weight.reshape(64, 32 * 7)  # (dim, C, 1, W) → (dim, C·W)
    as_linear = rows_as_sequence(fmap) @ weight.T + model.embed.bias
    torch.testing.assert_close(as_conv, as_linear, atol=1e-5, rtol=1e-5)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", NAMES)
def test_attention_models_are_zoo_entries_on_the_allowlist(name):
    from edgekit.io.archs import file_factory, known_preprocessing

    entry = ZOO[name]
    assert file_factory(entry.factory)().__class__.__name__ in ("ViTTiny", "ConvAttn")
    assert known_preprocessing(entry.factory, None).shape == (1, 1, 28, 28)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_checkpoint_loads_and_meets_its_target(name):
    from edgekit.io.models import load_model

    path = shipped_checkpoint(name)  # refuses a file whose sha256 differs from the record
    assert path is not None and path.name == f"{name}.pt"

    record = shipped_record(name)
    assert record["test_images"] == 10000 and record["test_top1"] >= ZOO[name].target_top1
    assert record["command"].startswith(f"edgekit zoo train {name}")
    bundle = load_model(path)  # weights_only, through the allowlist
    assert bundle.meta["test_top1"] == record["test_top1"]
    assert sum(p.numel() for p in bundle.model.parameters()) == record["parameters"]
