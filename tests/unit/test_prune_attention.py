"""Attention-head and MLP pruning (edgekit.passes.attn_prune through prune_model).

The proofs, in the RNN pruner's style: a head whose output columns (its block of proj's input) are
zero contributes nothing, so removing exactly that head (its q, k, v rows of the fused qkv and its
proj columns) must leave the outputs unchanged to float tolerance, with num_heads and every
projection consistent; removing a live head must not. The same for MLP hidden channels."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402

from edgekit.passes import attn_prune  # noqa: E402
from edgekit.passes.prune import PruneError, PruneOptions, prune_model  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402
from edgekit.zoo.attention import Block, ViTTiny  # noqa: E402

DIM, HEADS, HIDDEN = 32, 4, 64
HEAD_DIM = DIM // HEADS
SPEC = InputSpec(shape=(1, 1, 16, 16))


def _vit(depth: int = 2) -> ViTTiny:
    torch.manual_seed(0)
    net = ViTTiny(num_classes=5, image_size=16, patch_size=4, dim=DIM, depth=depth,
                  num_heads=HEADS, mlp_ratio=HIDDEN / DIM).eval()
    with torch.no_grad():  # larger weights so that a wrong cut changes the output visibly
        for block in net.blocks:
            block.attn.qkv.weight.mul_(3)
    return net


def _kill_head(attn: nn.Module, head: int) -> None:
    """Zero the head's output columns of proj (what it contributes) and its q, k, v rows (so
    magnitude importance ranks it last)."""
    cols = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    with torch.no_grad():
        attn.proj.weight[:, cols] = 0
        for third in range(3):
            start = third * DIM + head * HEAD_DIM
            attn.qkv.weight[start:start + HEAD_DIM] = 0
            attn.qkv.bias[start:start + HEAD_DIM] = 0


def _kill_hidden(block: Block, channels: list[int]) -> None:
    with torch.no_grad():
        block.mlp.fc1.weight[channels] = 0
        block.mlp.fc1.bias[channels] = 0
        block.mlp.fc2.weight[:, channels] = 0


def _consistent(attn: nn.Module, heads: int) -> None:
    assert attn.num_heads == heads and attn.head_dim == HEAD_DIM
    assert attn.qkv.weight.shape == (3 * heads * HEAD_DIM, DIM)
    assert attn.qkv.bias.shape == (3 * heads * HEAD_DIM,)
    assert attn.proj.weight.shape == (DIM, heads * HEAD_DIM)  # residual width kept


def test_pruning_dead_heads_and_channels_keeps_outputs():
    """Half the heads and half the MLP channels of every block are dead: prune_model at 0.5
    must find exactly them (L1), cut q, k, v and proj consistently and change nothing."""
    net = _vit()
    for i, block in enumerate(net.blocks):
        for head in ((0, 3), (1, 2))[i]:
            _kill_head(block.attn, head)
        _kill_hidden(block, list(range(i, HIDDEN, 2)))
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        reference = net(x)
    result = prune_model(net, SPEC, ratio=0.5)
    for block in net.blocks:
        _consistent(block.attn, HEADS // 2)
        assert block.mlp.fc1.out_features == HIDDEN // 2 == block.mlp.fc2.in_features
        assert block.mlp.fc2.out_features == DIM
    heads = {r["layer"]: (r["before"], r["after"]) for r in result.pruned if "heads" in r["type"]}
    assert heads == {"blocks.0.attn": (4, 2), "blocks.1.attn": (4, 2)}
    kept = {r["layer"] for r in result.skipped}
    assert {"patch_embed", "blocks.0.attn.proj", "blocks.1.mlp.fc2", "head"} <= kept
    assert result.notes == []  # no rounding, and pos_embed's axis is given, not guessed
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference, atol=1e-5, rtol=1e-5)


def test_removing_a_dead_head_keeps_outputs_and_a_live_one_does_not():
    """remove_heads goes through the same dependency graph; the control proves the proof can
    fail: cutting a live head changes the output."""
    x = torch.randn(3, 1, 16, 16)
    dead = _vit(depth=1)
    _kill_head(dead.blocks[0].attn, 2)
    with torch.no_grad():
        reference = dead(x)
    live = _vit(depth=1)
    _kill_head(live.blocks[0].attn, 2)
    attn_prune.remove_heads(dead, torch.zeros(1, 1, 16, 16), dead.blocks[0].attn, [2])
    attn_prune.remove_heads(live, torch.zeros(1, 1, 16, 16), live.blocks[0].attn, [1])
    _consistent(dead.blocks[0].attn, HEADS - 1)
    _consistent(live.blocks[0].attn, HEADS - 1)
    with torch.no_grad():
        torch.testing.assert_close(dead(x), reference, atol=1e-5, rtol=1e-5)
        assert (live(x) - reference).abs().max() > 1e-3


def test_head_ratio_is_rounded_to_whole_heads_and_said():
    assert attn_prune.heads_to_remove(4, 0.5) == (2, None)
    n, note = attn_prune.heads_to_remove(4, 0.3)
    assert n == 1 and "1.2" in note and "removing 1, keeping 3" in note
    assert attn_prune.heads_to_remove(4, 0.9)[0] == 3  # at least one head stays
    assert attn_prune.heads_to_remove(3, 1 / 3) == (1, None)
    net = _vit(depth=1)
    result = prune_model(net, SPEC, ratio=0.25, options=PruneOptions(head_ratio=0.3))
    assert net.blocks[0].attn.num_heads == 3
    assert any("blocks.0.attn" in n and "not a whole number" in n for n in result.notes)
    assert net.blocks[0].mlp.fc1.out_features == 48  # the channel ratio still applies
    net(torch.zeros(2, 1, 16, 16))


class TorchMHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, DIM)
        self.mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(2).transpose(1, 2).reshape(x.shape[0], 16, 16))
        return self.head(self.mha(t, t, t, need_weights=False)[0].mean(1))


class SplitQKV(nn.Module):
    """Separate q/k/v projections, heads split in code: not the fused layout."""

    def __init__(self) -> None:
        super().__init__()
        self.n_heads = HEADS
        self.q, self.k, self.v = (nn.Linear(DIM, DIM) for _ in range(3))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        q, k, v = (p(t).reshape(b, n, HEADS, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        return ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, DIM)


class SplitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, DIM)
        self.self_attention = SplitQKV()
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.reshape(x.shape[0], 16, 16))
        return self.head(self.self_attention(t).mean(1))


@pytest.mark.parametrize(("net", "name", "what"), [
    (SplitNet, "self_attention", "SplitQKV (n_heads=4)"),
])
def test_attention_the_pruner_cannot_trace_is_named(net, name, what):
    torch.manual_seed(0)
    model = net().eval()
    with pytest.raises(PruneError) as info:
        prune_model(model, SPEC, ratio=0.5)
    message = str(info.value)
    assert f"cannot trace the attention in {name}: {what}" in message
    assert "fused `qkv` nn.Linear" in message and f"--prune-ignore '{name}'" in message
    # ignored, it is kept whole and the rest is pruned around it
    x = torch.randn(2, 1, 16, 16)
    result = prune_model(model, SPEC, ratio=0.5, options=PruneOptions(ignore=[name]))
    assert model(x).shape == (2, 5)
    assert any(s["layer"].startswith(name) for s in result.skipped)


def test_pruned_checkpoint_reloads_with_its_head_counts(tmp_path):
    """Head counts are not in the state_dict: the prune pass records them as a structural edit
    that load_model replays (weights_only loading, through the zoo's factory)."""
    from edgekit.errors import ModelLoadError
    from edgekit.io.models import load_model, save_checkpoint
    from edgekit.passes.base import PassContext
    from edgekit.passes.prune import PrunePass
    from edgekit.zoo import build

    torch.manual_seed(0)
    bundle = build("vit_tiny", dim=32, depth=2)
    bundle = PrunePass({"ratio": 0.5}).apply(bundle, PassContext(out_dir=tmp_path))
    assert bundle.surgery == [{"op": "attn_prune",
                               "num_heads": {"blocks.0.attn": 2, "blocks.1.attn": 2}}]
    path = save_checkpoint(bundle, tmp_path / "pruned.pt")
    loaded = load_model(path)
    x = torch.randn(2, 1, 28, 28)
    assert [b.attn.num_heads for b in loaded.model.blocks] == [2, 2]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), bundle.model(x))
    payload = torch.load(path, weights_only=True)
    payload["surgery"] = [{"op": "attn_prune", "num_heads": {"blocks.0.attn": "two"}}]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="attn_prune record is malformed"):
        load_model(tmp_path / "bad.pt")


class InputWidthAttention(nn.Module):
    """timm 1.0's Attention: the fused layout, but the heads' output is reshaped to the input
    width C, so removing heads breaks its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, HEAD_DIM
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        out = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


def test_attention_reshaping_to_the_input_width_is_named_with_the_way_out():
    torch.manual_seed(0)
    net = _vit(depth=1)
    net.blocks[0].attn = InputWidthAttention()
    with pytest.raises(PruneError) as info:
        prune_model(net, SPEC, ratio=0.5)
    assert "fails at blocks.0.attn" in str(info.value) and "num_heads × head_dim" in str(info.value)
    assert "--prune-heads 0" in info.value.hint
    net = _vit(depth=1)
    net.blocks[0].attn = InputWidthAttention()
    prune_model(net, SPEC, ratio=0.5,
                options=PruneOptions(head_ratio=0))  # the MLP is pruned, the heads stay
    assert net.blocks[0].attn.num_heads == HEADS and net.blocks[0].mlp.fc1.out_features == 32
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 5)


class ChannelAttention(nn.Module):
    """Squeeze-excitation style 'attention' of a CNN: no heads, ordinary prunable layers."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


def test_a_cnn_channel_attention_is_not_taken_for_multi_head_attention():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), ChannelAttention(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 14 * 14, 5)).eval()
    result = prune_model(net, SPEC, ratio=0.5)
    assert {r["layer"] for r in result.pruned} >= {"0"}
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 5)


# ------------------------------------------------- torch.nn.MultiheadAttention (issue 27)
def test_multihead_attention_is_converted_with_identical_outputs_and_its_heads_pruned():
    torch.manual_seed(0)
    model = TorchMHA().eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        reference = model(x)
    fused = attn_prune.fuse_multihead_attention(model, x)
    assert fused == ["mha"] and attn_prune.is_supported(model.mha)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    model = TorchMHA().eval()
    result = prune_model(model, SPEC, ratio=0.5, options=PruneOptions(head_ratio=0.5))
    assert result.fused_attention == ["mha"]
    assert model.mha.num_heads == HEADS // 2 and model.mha.qkv.out_features == 3 * DIM // 2
    assert {"layer": "mha", "type": "FusedSelfAttention heads", "before": HEADS,
            "after": HEADS // 2} in result.pruned
    assert model(x).shape == (3, 5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer_converts_to_the_same_outputs(batch_first):
    """nn.TransformerEncoderLayer in eval mode has a fused fast path that reads
    MultiheadAttention's own parameters: the converted layer must take its ordinary path and
    give the same outputs (to 1e-5), batch-first or not."""
    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(16, DIM)
            layer = nn.TransformerEncoderLayer(DIM, HEADS, 64, dropout=0.0,
                                               batch_first=batch_first)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(DIM, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.embed(x.reshape(x.shape[0], 16, 16))
            t = t if batch_first else t.transpose(0, 1)
            t = self.encoder(t)
            return self.head((t if batch_first else t.transpose(0, 1)).mean(1))

    model = Encoder().eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        reference = model(x)
    assert attn_prune.fuse_multihead_attention(model, x) == [
        "encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    result = prune_model(model, SPEC, ratio=0.25, options=PruneOptions(head_ratio=0.5))
    assert [layer.self_attn.num_heads for layer in model.encoder.layers] == [2, 2]
    assert len([r for r in result.pruned if r["type"].endswith(" heads")]) == 2
    assert model(x).shape == (4, 5)


def test_cross_attention_is_put_back_and_named():
    class Cross(TorchMHA):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.embed(x.reshape(x.shape[0], 16, 16))
            return self.head(self.mha(t, t.flip(1), t.flip(1), need_weights=False)[0].mean(1))

    model = Cross().eval()
    with pytest.raises(PruneError) as info:
        prune_model(model, SPEC, ratio=0.5)
    assert "cannot trace the attention in mha" in str(info.value)
    assert "not called as plain self-attention" in str(info.value)
    assert "--prune-ignore 'mha'" in str(info.value)
    assert isinstance(model.mha, nn.MultiheadAttention)  # put back as it was
    result = prune_model(model, SPEC, ratio=0.5, options=PruneOptions(ignore=["mha"]))
    assert result.fused_attention == [] and model(torch.randn(2, 1, 16, 16)).shape == (2, 5)


@pytest.mark.slow
def test_torchvision_vit_heads_are_pruned_and_the_checkpoint_reloads(tmp_path):
    """torchvision's own vit_b_16 (at 32×32, random weights): its MultiheadAttention layers are
    converted and lose half their heads; the checkpoint records the conversion and the head
    counts and reloads (weights_only, through torchvision's factory) to the same outputs."""
    from edgekit.io.models import build_arch, load_model, save_checkpoint
    from edgekit.passes.base import PassContext
    from edgekit.passes.prune import PrunePass

    torch.manual_seed(0)
    path = tmp_path / "vit.pt"
    model = build_arch("torchvision.models:vit_b_16", {"image_size": 32, "num_classes": 5}).eval()
    torch.save(model.state_dict(), path)
    bundle = load_model(path, arch="torchvision.models:vit_b_16", arch_kwargs={"image_size": 32, "num_classes": 5},
                        input_shape=(1, 3, 32, 32), preprocessing={"preset": "imagenet"})
    bundle = PrunePass({"ratio": 0.25, "head_ratio": 0.5}).apply(
        bundle, PassContext(out_dir=tmp_path))
    layers = bundle.model.encoder.layers
    assert [blk.self_attention.num_heads for blk in layers] == [6] * 12
    assert bundle.surgery[0] == {"op": "mha_fuse",
                                 "layers": [f"encoder.layers.encoder_layer_{i}.self_attention"
                                            for i in range(12)]}
    assert bundle.surgery[1]["op"] == "attn_prune"
    saved = save_checkpoint(bundle, tmp_path / "pruned.pt")
    loaded = load_model(saved)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), bundle.model(x))


def test_multihead_attention_macs_are_counted_as_the_fused_layout_counts_them():
    """model_cost counts torch.nn.MultiheadAttention (whose forward calls its projections'
    weights, not its Linears, so no Linear hook saw them: vit_b_16 reported MORE MACs after
    pruning 4 of its 12 heads) as its converted fused-qkv layer counts it: 4·T·E² + 2·T²·E."""
    from edgekit.passes.stats import model_cost

    torch.manual_seed(0)
    model = TorchMHA().eval()
    before = model_cost(model, SPEC)["macs"]
    tokens = 16
    linears = tokens * 16 * DIM + DIM * 5  # embed and head
    assert before == linears + 4 * tokens * DIM * DIM + 2 * tokens * tokens * DIM
    attn_prune.fuse_multihead_attention(model, torch.randn(2, 1, 16, 16))
    assert model_cost(model, SPEC)["macs"] == before
    prune_model(model, SPEC, ratio=0.5, options=PruneOptions(head_ratio=0.5))
    assert model_cost(model, SPEC)["macs"] < before
