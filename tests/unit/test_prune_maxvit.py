"""Head pruning of torchvision's MaxViT (edgekit.passes.swin_prune, issue 27: maxvit_t was
refused, "PartitionAttentionLayer splits its projections into heads in code the dependency
graph cannot see"). A small MaxVit (32×32, two stages, head_dim 4, random weights, seed 0)
built by torchvision's own class: removing heads (their q, k, v rows of to_qkv, their merge
columns, their bias-table column) equals the original with those heads' merge columns zeroed;
the prune step removes heads and MBConv channels, keeps the residual width and the
partition-attention MLPs, and the checkpoint reloads to the same outputs."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
maxvit = pytest.importorskip("torchvision.models.maxvit")

from edgekit.passes import swin_prune  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402

RES = 32
SPEC = InputSpec(shape=(1, 3, RES, RES), mean=(0.5,) * 3, std=(0.5,) * 3)
KWARGS = {"input_size": (RES, RES), "stem_channels": 8, "partition_size": 2,
          "block_channels": [16, 32], "block_layers": [1, 1], "head_dim": 4,
          "stochastic_depth_prob": 0.0, "num_classes": 5}


@pytest.fixture(scope="module")
def original():
    torch.manual_seed(0)
    return maxvit.MaxVit(**KWARGS).eval()


def _x(n: int = 2):
    return torch.randn((n, 3, RES, RES), generator=torch.Generator().manual_seed(1))


def _heads(model) -> list[int]:
    return [swin_prune.heads_of(m) for _, m in swin_prune.head_layers(model)]


def test_removing_maxvit_heads_equals_zeroing_their_output(original):
    """Every relative attention loses one head (a different one each) against the original with
    that head's merge columns zeroed: equal to 1e-5; the head-aware forward without a removal
    equals torchvision's to 1e-6; the same cut without zeroing moves the outputs."""
    x = _x()
    assert _heads(original) == [4, 4, 8, 8]
    aware = copy.deepcopy(original)
    for _, m in swin_prune.head_layers(aware):
        swin_prune.make_head_aware(m)
    with torch.no_grad():
        torch.testing.assert_close(aware(x), original(x), atol=1e-6, rtol=0)
    zeroed, pruned = copy.deepcopy(original), copy.deepcopy(original)
    for i, ((_, z), (_, p)) in enumerate(zip(swin_prune.head_layers(zeroed),
                                             swin_prune.head_layers(pruned), strict=True)):
        h, d = z.n_heads, z.head_dim
        gone = [i % h, (i + 2) % h]
        with torch.no_grad():
            for head in gone:
                z.merge.weight[:, head * d:(head + 1) * d] = 0
        swin_prune.remove_window_heads(p, gone)
        assert p.n_heads == h - 2 and p.head_dim == d
        assert p.to_qkv.weight.shape == (3 * (h - 2) * d, h * d)
        assert p.merge.weight.shape == (h * d, (h - 2) * d)
        assert p.relative_position_bias_table.shape == (9, h - 2)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zeroed(x), atol=1e-5, rtol=0)
        live = copy.deepcopy(original)
        swin_prune.remove_window_heads(swin_prune.head_layers(live)[0][1], [0, 1])
        assert (live(x) - original(x)).abs().max() > 1e-4


def test_maxvit_prunes_heads_and_mbconv_channels_and_reloads(tmp_path, original):
    """The prune step at 0.5: half the heads of every relative attention, the MBConv inner
    channels pruned, the residual width (each partition attention's input and output) and its
    MLP kept, with the reasons; MACs fall; the checkpoint records the heads and reloads to the
    same outputs."""
    from edgekit.io.models import ModelBundle, load_model, save_checkpoint
    from edgekit.passes.base import PassContext
    from edgekit.passes.prune import PrunePass
    from edgekit.passes.stats import model_cost

    model = copy.deepcopy(original)
    before = model_cost(model, SPEC)
    bundle = ModelBundle(model, SPEC, "torchvision.models.maxvit:MaxVit", dict(KWARGS))
    bundle = PrunePass({"ratio": 0.5}).apply(bundle, PassContext(out_dir=tmp_path))
    pruned = bundle.model
    assert _heads(pruned) == [2, 2, 4, 4]
    rows = {r["layer"]: (r["before"], r["after"]) for r in bundle.meta["pruning"]["pruned"]}
    head = "blocks.0.layers.0.layers.window_attention.attn_layer.1"
    assert rows[head] == (4, 2)
    mbconv = [layer for layer in rows if ".MBconv.layers.conv_a" in layer]
    assert mbconv and all(rows[layer][1] < rows[layer][0] for layer in mbconv)
    block = pruned.blocks[1].layers[0].layers
    assert block.window_attention.attn_layer[1].merge.out_features == 32  # residual width
    assert block.grid_attention.mlp_layer[1].out_features == 128  # the MLP kept
    assert model_cost(pruned, SPEC)["macs"] < 0.8 * before["macs"]
    x = _x()
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert bundle.surgery[-1] == {"op": "swin_prune", "num_heads": dict(zip(
        [n for n, _ in swin_prune.head_layers(pruned)], _heads(pruned), strict=True))}
    # MaxVit itself is not a registered factory (maxvit_t fixes the sizes): named by the user
    loaded = load_model(save_checkpoint(bundle, tmp_path / "pruned.pt"), trust_model=True)
    assert _heads(loaded.model) == _heads(pruned)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), out)
