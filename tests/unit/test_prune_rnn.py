"""Gate-aware RNN hidden-unit pruning and the hybrids' channel → RNN-column mapping.

The proofs: units whose outgoing weights are zero contribute nothing, so removing exactly them
(every gate, every layer and direction) must leave the outputs unchanged to float tolerance;
removing other units must not. The same holds for conv channels whose BatchNorm output is zero
when they feed an RNN through permute + flatten."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402

from edgekit.passes import rnn_prune  # noqa: E402
from edgekit.passes.prune import PruneOptions, prune_model  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402

KINDS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
HIDDEN, FEATURES, STEPS = 12, 7, 6


class SeqNet(nn.Module):
    """An RNN reading a (B, 1, T, F) 'image' row by row, a linear head on the last step."""

    def __init__(self, kind: str = "lstm", layers: int = 1, bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = KINDS[kind](FEATURES, HIDDEN, num_layers=layers, bidirectional=bidirectional,
                               batch_first=True)
        self.head = nn.Linear(HIDDEN * (2 if bidirectional else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.squeeze(1))
        return self.head(out[:, -1])


SPEC = InputSpec(shape=(1, 1, STEPS, FEATURES))
CASES = [(k, layers, bi) for k in ("lstm", "gru") for layers in (1, 2) for bi in (False, True)]
CASES.append(("rnn", 2, True))


def _net(kind: str, layers: int, bidirectional: bool) -> SeqNet:
    torch.manual_seed(0)
    net = SeqNet(kind, layers, bidirectional).eval()
    with torch.no_grad():  # larger weights so that a wrong cut changes the output visibly
        for p in net.rnn.parameters():
            p.mul_(3)
    return net


def _plan(net: SeqNet, n: int = 4, seed: int = 1) -> dict[tuple[int, int], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    dirs = rnn_prune.num_directions(net.rnn)
    return {(layer, d): sorted(torch.randperm(HIDDEN, generator=gen)[:n].tolist())
            for layer in range(net.rnn.num_layers) for d in range(dirs)}


def _zero_outgoing(net: SeqNet, plan: dict[tuple[int, int], list[int]]) -> None:
    """Every weight that reads unit u of (layer, direction): W_hh columns of its own layer, the
    next layer's W_ih columns (both directions), the head's columns for the last layer."""
    rnn, dirs, hidden = net.rnn, rnn_prune.num_directions(net.rnn), net.rnn.hidden_size
    with torch.no_grad():
        for (layer, d), units in plan.items():
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            getattr(rnn, "weight_hh" + sfx)[:, units] = 0
            cols = [u + d * hidden for u in units]
            if layer + 1 < rnn.num_layers:
                for dd in range(dirs):
                    getattr(rnn, f"weight_ih_l{layer + 1}" + ("_reverse" if dd else ""))[:, cols] = 0
            else:
                net.head.weight[:, cols] = 0


def _cut_head(net: SeqNet, gone: list[int]) -> None:
    keep = [i for i in range(net.head.in_features) if i not in gone]
    net.head.weight = nn.Parameter(net.head.weight.data[:, keep])
    net.head.in_features = len(keep)


@pytest.mark.parametrize(("kind", "layers", "bidirectional"), CASES)
def test_removing_units_with_zero_outgoing_weights_keeps_outputs(kind, layers, bidirectional):
    net = _net(kind, layers, bidirectional)
    plan = _plan(net)
    _zero_outgoing(net, plan)
    x = torch.randn(3, 1, STEPS, FEATURES)
    with torch.no_grad():
        reference = net(x)
    gone = rnn_prune.output_indices(net.rnn, plan)  # before the RNN shrinks
    rnn_prune.prune_rnn_hidden(net.rnn, plan)
    _cut_head(net, gone)
    gates, dirs = rnn_prune.num_gates(net.rnn), rnn_prune.num_directions(net.rnn)
    kept = HIDDEN - 4
    assert net.rnn.hidden_size == kept
    assert net.rnn.weight_ih_l0.shape == (gates * kept, FEATURES)
    assert net.rnn.weight_hh_l0.shape == (gates * kept, kept)
    assert net.rnn.bias_ih_l0.shape == net.rnn.bias_hh_l0.shape == (gates * kept,)
    if layers > 1:
        assert net.rnn.weight_ih_l1.shape == (gates * kept, dirs * kept)
    if bidirectional:
        assert net.rnn.weight_hh_l0_reverse.shape == (gates * kept, kept)
    with torch.no_grad():
        pruned = net(x)
    assert pruned.shape == reference.shape
    torch.testing.assert_close(pruned, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kind", "layers", "bidirectional"), [("lstm", 2, True), ("gru", 1, False)])
def test_removing_other_units_changes_outputs(kind, layers, bidirectional):
    """The control: the proof above is sensitive, cutting live units does change the output."""
    net = _net(kind, layers, bidirectional)
    zeroed = _plan(net, seed=1)
    _zero_outgoing(net, zeroed)
    live = {key: [u for u in range(HIDDEN) if u not in units][:4] for key, units in zeroed.items()}
    x = torch.randn(3, 1, STEPS, FEATURES)
    with torch.no_grad():
        reference = net(x)
    gone = rnn_prune.output_indices(net.rnn, live)
    rnn_prune.prune_rnn_hidden(net.rnn, live)
    _cut_head(net, gone)
    with torch.no_grad():
        assert (net(x) - reference).abs().max() > 1e-3


def test_unequal_counts_and_wiping_out_are_refused():
    net = _net("gru", 2, False)
    with pytest.raises(ValueError, match="same number"):
        rnn_prune.prune_rnn_hidden(net.rnn, {(0, 0): [1, 2], (1, 0): [3]})
    with pytest.raises(ValueError, match="every hidden unit"):
        rnn_prune.prune_rnn_hidden(net.rnn, {(0, 0): list(range(HIDDEN)),
                                             (1, 0): list(range(HIDDEN))})
    with pytest.raises(ValueError, match="out of range"):
        rnn_prune.prune_rnn_hidden(net.rnn, {(0, 0): [HIDDEN], (1, 0): [0]})


@pytest.mark.parametrize(("kind", "layers", "bidirectional"), CASES)
def test_prune_model_finds_and_removes_dead_units_through_the_graph(kind, layers, bidirectional):
    """Half the units of every (layer, direction) are dead (incoming and outgoing weights zero):
    prune_model at 0.5 must rank them lowest, remove them and the head's matching columns, and
    leave the outputs unchanged."""
    net = _net(kind, layers, bidirectional)
    plan = _plan(net, n=HIDDEN // 2)
    _zero_outgoing(net, plan)
    gates = rnn_prune.num_gates(net.rnn)
    with torch.no_grad():
        for (layer, d), units in plan.items():
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            rows = [u + g * HIDDEN for g in range(gates) for u in units]
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(net.rnn, name + sfx)[rows] = 0
    x = torch.randn(4, 1, STEPS, FEATURES)
    with torch.no_grad():
        reference = net(x)
    result = prune_model(net, SPEC, ratio=0.5)
    assert net.rnn.hidden_size == HIDDEN // 2
    assert net.head.out_features == 5
    assert [p["layer"] for p in result.pruned] == ["rnn"]
    assert [s["layer"] for s in result.skipped] == ["head"]
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference, atol=1e-5, rtol=1e-5)


def test_reloaded_state_dict_resizes_multilayer_bidirectional_rnn():
    """fit_to_state_dict (edgekit.io.models) rebuilds a pruned LSTM/GRU from its state_dict."""
    from edgekit.io.models import fit_to_state_dict

    for kind in ("lstm", "gru"):
        net = _net(kind, 2, True)
        prune_model(net, SPEC, ratio=0.25)
        fresh = SeqNet(kind, 2, True)
        fit_to_state_dict(fresh, net.state_dict())
        fresh.load_state_dict(net.state_dict())
        fresh.eval()
        x = torch.randn(2, 1, STEPS, FEATURES)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), net(x))
        assert fresh.rnn.hidden_size == 9


def test_state_of_a_bidirectional_rnn_is_not_mapped_blindly():
    """h_n of a bidirectional/multi-layer RNN has another layout than its output: not pruned,
    and the reason is given."""

    class LastState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(FEATURES, HIDDEN, num_layers=2, batch_first=True)
            self.head = nn.Linear(HIDDEN, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, h = self.rnn(x.squeeze(1))
            return self.head(h[-1])

    net = LastState().eval()
    result = prune_model(net, SPEC, ratio=0.5)
    assert net.rnn.hidden_size == HIDDEN
    reason = {s["layer"]: s["reason"] for s in result.skipped}["rnn"]
    assert "h_n" in reason


@pytest.mark.parametrize("name", ["cnn_gru", "cnn_lstm"])
def test_hybrid_channels_map_to_rnn_columns(name):
    """Channels of the last conv whose BatchNorm output is zero feed nothing to the RNN; pruning
    exactly them (bn-scale ranks them lowest) with their RNN input columns c*W..c*W+W-1 must keep
    the outputs. A wrong column mapping would cut live columns and change them."""
    from edgekit.zoo import build

    torch.manual_seed(0)
    bundle = build(name)
    model = bundle.model.eval()
    dead = sorted(torch.randperm(32, generator=torch.Generator().manual_seed(3))[:16].tolist())
    with torch.no_grad():
        model.features[5].weight[dead] = 0
        model.features[5].bias[dead] = 0
        model.features[5].running_mean.uniform_(-0.5, 0.5)
        model.features[5].running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        reference = model(x)
    result = prune_model(model, bundle.spec, ratio=0.5,
                         options=PruneOptions(importance="bn-scale", ignore=["features.0"], rnn_hidden=False))
    assert model.features[4].out_channels == 16
    assert model.rnn.input_size == 16 * 7
    assert model.rnn.hidden_size == 128
    skipped = {s["layer"]: s["reason"] for s in result.skipped}
    assert "ignore list" in skipped["features.0"]
    assert "switched off" in skipped["rnn"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)


def test_channel_last_sequence_layout_is_refused_with_a_reason():
    """A channel-last flatten cannot be mapped with fixed strides: the conv feeding the RNN keeps
    its channels and says why (nothing silently wrong)."""

    class ChannelLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.rnn = nn.GRU(8 * 6, 16, batch_first=True)
            self.head = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.conv(x)                       # (B, 8, 6, 6)
            seq = f.permute(0, 2, 3, 1).flatten(2)  # (B, H, W*C): channel-last
            out, _ = self.rnn(seq)
            return self.head(out[:, -1])

    net = ChannelLast().eval()
    spec = InputSpec(shape=(1, 1, 6, 6))
    result = prune_model(net, spec, ratio=0.5)
    assert net.conv.out_channels == 8
    assert net.rnn.hidden_size == 8  # its hidden units are still pruned
    reason = {s["layer"]: s["reason"] for s in result.skipped}["conv"]
    assert "feeds rnn" in reason and "channel-last" in reason
