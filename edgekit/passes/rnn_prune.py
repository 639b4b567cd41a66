"""Gate-aware hidden-unit pruning of LSTM/GRU/RNN layers, and how Torch-Pruning is taught to see
them.

Why this exists: Torch-Pruning's own LSTM pruner slices the gate-stacked weights as if they were
one block (the 4 gates lose their layout), has no GRU, and its tracer walks *into* the recurrent
computation, so a conv feature map that feeds an RNN (the zoo hybrids) breaks its index mapping.

What is here:
  * `prune_rnn_hidden` / `prune_rnn_input`: remove hidden units (per layer and direction, every
    gate of W_ih, W_hh and both biases, the W_hh columns, the next layer's W_ih columns for both
    directions) or input columns, keeping parameters' gradients in step (Taylor importance).
  * `hidden_importance`: a score per hidden unit from its gate rows and outgoing columns.
  * `rnn_pruner()`: a Torch-Pruning pruning function for nn.LSTM/GRU/RNN built on the above, so the
    dependency graph shrinks an RNN's input columns together with the conv channels feeding it and
    a classifier's columns together with the RNN's hidden units.
  * `opaque_rnns(model)`: during tracing, replaces each RNN's outputs by a node whose only inputs
    are the RNN's input and weights, so the graph sees the RNN as one layer.
  * `teach_sequence_mapping(graph, rnn)`: a feature map (B, C, H, W) read as a sequence with
    `permute(0, 2, 1, 3).flatten(2)` (edgekit.zoo.models.SEQUENCE_LAYOUT) gives channel c the RNN
    input columns [c*W, (c+1)*W); this sets that mapping on the graph edge, or says why it cannot.

Layout of PyTorch's recurrent weights, which every function here keeps: weight_ih_l{k}{_reverse}
is (G*H, in) with the G gates stacked along rows (LSTM i,f,g,o; GRU r,z,n); weight_hh is (G*H, H);
biases are (G*H,); layer k>0 reads [forward H | backward H] of layer k-1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def num_gates(rnn: nn.RNNBase) -> int:
    return GATES[rnn.mode]


def num_directions(rnn: nn.RNNBase) -> int:
    return 2 if rnn.bidirectional else 1


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def _select(param: nn.Parameter, index: torch.Tensor, dim: int) -> nn.Parameter:
    """index_select on a parameter and its gradient (kept for Taylor importance)."""
    new = nn.Parameter(param.data.index_select(dim, index).clone(),
                       requires_grad=param.requires_grad)
    if param.grad is not None:
        new.grad = param.grad.index_select(dim, index).clone()
    return new


def _keep(size: int, remove: Sequence[int]) -> torch.Tensor:
    gone = {int(i) for i in remove}
    bad = [i for i in gone if not 0 <= i < size]
    if bad:
        raise ValueError(f"unit indices {sorted(bad)[:5]} out of range 0..{size - 1}")
    return torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)


def _refresh(rnn: nn.RNNBase) -> None:
    """Re-point the RNN's flat weight list at the new parameters."""
    rnn._init_flat_weights()


def prune_rnn_hidden(rnn: nn.RNNBase, remove: Mapping[tuple[int, int], Sequence[int]]) -> None:
    """Remove hidden units in place. `remove[(layer, direction)]` lists the units of that layer
    and direction; every (layer, direction) must lose the same number (nn.LSTM/GRU have one
    hidden_size), and at least one unit must stay. Gate-aware: for each gate block g the rows
    g*H + u go. The consumer of the last layer (e.g. a classifier) is not touched here: its
    columns are [u + d*H for each direction d] (see `output_indices`)."""
    if getattr(rnn, "proj_size", 0):
        raise ValueError("LSTM with proj_size: hidden units feed a projection; not supported")
    hidden, gates, dirs = rnn.hidden_size, num_gates(rnn), num_directions(rnn)
    keep: dict[tuple[int, int], torch.Tensor] = {}
    for layer in range(rnn.num_layers):
        for d in range(dirs):
            keep[(layer, d)] = _keep(hidden, remove.get((layer, d), ()))
    extra = set(remove) - set(keep)
    if extra:
        raise ValueError(f"no (layer, direction) {sorted(extra)} in this RNN")
    sizes = {len(k) for k in keep.values()}
    if len(sizes) != 1:
        raise ValueError("every layer and direction must keep the same number of hidden units, "
                         f"got {sorted(sizes)}")
    new_hidden = sizes.pop()
    if new_hidden < 1:
        raise ValueError("pruning would remove every hidden unit")
    if new_hidden == hidden:
        return
    for layer in range(rnn.num_layers):
        for d in range(dirs):
            k = keep[(layer, d)]
            rows = torch.cat([k + g * hidden for g in range(gates)])
            sfx = _suffix(layer, d)
            w_ih = _select(getattr(rnn, "weight_ih" + sfx), rows, 0)
            if layer > 0:
                cols = torch.cat([keep[(layer - 1, dd)] + dd * hidden for dd in range(dirs)])
                w_ih = _select(w_ih, cols, 1)
            setattr(rnn, "weight_ih" + sfx, w_ih)
            w_hh = _select(getattr(rnn, "weight_hh" + sfx), rows, 0)
            setattr(rnn, "weight_hh" + sfx, _select(w_hh, k, 1))
            if rnn.bias:
                for name in ("bias_ih", "bias_hh"):
                    setattr(rnn, name + sfx, _select(getattr(rnn, name + sfx), rows, 0))
    rnn.hidden_size = new_hidden
    _refresh(rnn)


def prune_rnn_input(rnn: nn.RNNBase, remove: Sequence[int]) -> None:
    """Remove input features (columns of the first layer's W_ih, both directions) in place."""
    k = _keep(rnn.input_size, remove)
    if len(k) == 0:
        raise ValueError("pruning would remove every input feature of the RNN")
    for d in range(num_directions(rnn)):
        name = "weight_ih" + _suffix(0, d)
        setattr(rnn, name, _select(getattr(rnn, name), k, 1))
    rnn.input_size = len(k)
    _refresh(rnn)


def output_indices(rnn: nn.RNNBase, remove: Mapping[tuple[int, int], Sequence[int]]) -> list[int]:
    """Indices of the RNN's output features (last layer, [forward | backward]) that
    `remove` takes away: what a consumer such as the classifier must lose too."""
    last = rnn.num_layers - 1
    return sorted(int(u) + d * rnn.hidden_size for d in range(num_directions(rnn))
                  for u in remove.get((last, d), ()))


def hidden_importance(rnn: nn.RNNBase, kind: str = "l1") -> dict[tuple[int, int], torch.Tensor]:
    """Score per hidden unit and (layer, direction): for magnitude (l1, l2) the sum of |w|^p over
    the unit's rows in every gate of W_ih and W_hh and its outgoing columns (W_hh of its own
    layer, W_ih of the next layer); for taylor the same sum of |w * dL/dw| (falls back to l1
    where a weight has no gradient). Low scores are pruned first."""
    hidden, gates, dirs = rnn.hidden_size, num_gates(rnn), num_directions(rnn)
    p = 2 if kind == "l2" else 1

    def score(param: torch.Tensor) -> torch.Tensor:
        if kind == "taylor" and param.grad is not None:
            return (param.data * param.grad).abs()
        return param.data.abs().pow(p)

    scores: dict[tuple[int, int], torch.Tensor] = {}
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            for d in range(dirs):
                sfx = _suffix(layer, d)
                w_ih, w_hh = getattr(rnn, "weight_ih" + sfx), getattr(rnn, "weight_hh" + sfx)
                rows = score(w_ih).sum(1) + score(w_hh).sum(1)  # (G*H,)
                unit = rows.view(gates, hidden).sum(0) + score(w_hh).sum(0)
                if layer + 1 < rnn.num_layers:
                    for dd in range(dirs):
                        nxt = score(getattr(rnn, "weight_ih" + _suffix(layer + 1, dd)))
                        unit = unit + nxt[:, d * hidden:(d + 1) * hidden].sum(0)
                scores[(layer, d)] = unit.float()
    return scores


def plan_hidden_pruning(rnn: nn.RNNBase, keep: int, importance: str = "l1"
                        ) -> dict[tuple[int, int], list[int]]:
    """The `keep` most important units of every (layer, direction); returns those to remove."""
    scores = hidden_importance(rnn, importance)
    n_remove = rnn.hidden_size - keep
    return {key: sorted(torch.argsort(s)[:n_remove].tolist()) for key, s in scores.items()}


# ---------------------------------------------------------------- Torch-Pruning integration
def rnn_pruner() -> Any:
    """A Torch-Pruning pruning function for every nn.RNNBase (register it for nn.LSTM, nn.GRU and
    nn.RNN through `customized_pruners`). Output channels are the RNN's output features
    (directions × hidden); input channels are its input features."""
    import torch_pruning as tp

    class RNNPruner(tp.pruner.function.BasePruningFunc):
        TARGET_MODULES = (nn.RNNBase,)

        def __init__(self) -> None:
            super().__init__()
            # Inner-layer plan for the next out-channel pruning of a module (multi-layer RNNs):
            # the graph only sees the last layer's outputs.
            self.pending: dict[nn.Module, dict[tuple[int, int], list[int]]] = {}

        def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
            hidden, dirs, last = layer.hidden_size, num_directions(layer), layer.num_layers - 1
            plan = dict(self.pending.pop(layer, {}))
            from_graph: dict[tuple[int, int], list[int]] = {(last, d): [] for d in range(dirs)}
            for i in idxs:
                from_graph[(last, int(i) // hidden)].append(int(i) % hidden)
            for key, units in from_graph.items():
                if key in plan and sorted(plan[key]) != sorted(units):
                    raise ValueError("pruning plan and graph indices disagree for "
                                     f"layer {key[0]} direction {key[1]}")
                plan[key] = units
            if layer.num_layers > 1 and not all((k, d) in plan for k in range(last)
                                                for d in range(dirs)):
                raise ValueError("a multi-layer RNN's hidden units can only be pruned by "
                                 "edgekit's RNN step, not as part of another layer's group")
            prune_rnn_hidden(layer, plan)
            return layer

        def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
            prune_rnn_input(layer, idxs)
            return layer

        def get_out_channels(self, layer: nn.RNNBase) -> int:
            return (getattr(layer, "proj_size", 0) or layer.hidden_size) * num_directions(layer)

        def get_in_channels(self, layer: nn.RNNBase) -> int:
            return layer.input_size

    return RNNPruner()


class _RNNOutput(torch.autograd.Function):
    """Stands for an RNN's output during tracing: same values, inputs = the RNN's input and
    weights only, so Torch-Pruning's tracer does not walk into the recurrence."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.n_inputs = len(inputs)
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # pragma: no cover - never called
        return (None,) * (1 + ctx.n_inputs)


class _RNNState(torch.autograd.Function):
    """Stands for an RNN's final state (h_n, c_n) during tracing; it hangs off the output node."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # pragma: no cover
        return None, None


STATE_NODE_NAME = "_RNNStateBackward"


@contextlib.contextmanager
def opaque_rnns(model: nn.Module) -> Iterator[None]:
    """While active, every RNN's (output, state) are replaced by _RNNOutput/_RNNState nodes.
    Register it before Torch-Pruning's own hooks (hooks run in registration order)."""

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not isinstance(output, tuple):
            return None  # PackedSequence input: leave it to the tracer
        out, state = output
        params = [p for p in module.parameters() if p.requires_grad]
        new_out = _RNNOutput.apply(out.detach(), x, *params)
        if isinstance(state, tuple):
            new_state = tuple(_RNNState.apply(s.detach(), new_out) for s in state)
        else:
            new_state = _RNNState.apply(state.detach(), new_out)
        return new_out, new_state

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.RNNBase)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _saved_sizes(grad_fn: Any) -> tuple[int, ...] | None:
    for attr in ("_saved_self_sym_sizes", "_saved_self_sizes"):
        if hasattr(grad_fn, attr):
            return tuple(int(s) for s in getattr(grad_fn, attr))
    return None


def teach_sequence_mapping(graph: Any, rnn: nn.RNNBase) -> str | None:
    """Teach the dependency graph which input columns of `rnn` each channel of the feature map
    feeding it owns. Returns None when the graph is right (mapping set, or no reshape between),
    else the reason it cannot be mapped (the caller then leaves the producing layers unpruned).

    Recognised: (B, C, H, W) → [permute] → reshape to (B, T, F) where C is the leading factor of
    the merged feature axis F (e.g. SEQUENCE_LAYOUT: permute(0,2,1,3).flatten(2): channel c owns
    columns [c*W, (c+1)*W)), or stays the feature axis alone. A channel-last merge or channels
    becoming time steps cannot be mapped with fixed strides."""
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

    node = graph.module2node.get(rnn)
    if node is None or not node.inputs:
        return None  # reads the model input (or is unused): nothing upstream to prune
    current = node.inputs[0]
    while current.type.name == "ELEMENTWISE" and len(current.inputs) == 1:
        current = current.inputs[0]  # dropout, activations: channel-preserving
    if current.type.name != "RESHAPE":
        return None  # no reshape: TP's element-wise propagation is right (C == input_size)
    reshape = current
    sizes = _saved_sizes(reshape.grad_fn)
    # Walk back over clone/contiguous to a permute (if any) to learn where the channel axis is.
    dims: tuple[int, ...] | None = None
    walker = reshape.inputs[0] if reshape.inputs else None
    while walker is not None and walker.grad_fn is not None:
        name = walker.grad_fn.name()
        if name.startswith("Permute"):
            dims = tuple(int(d) for d in walker.grad_fn._saved_dims)
            break
        if name.startswith(("Clone", "Contiguous", "Alias")) and len(walker.inputs) == 1:
            walker = walker.inputs[0]
            continue
        break
    if sizes is None or len(sizes) != 4:
        return "its input is reshaped from a tensor that is not 4-D (B, C, H, W)"
    channel_pos = dims.index(1) if dims is not None else 1
    features = rnn.input_size
    merged_from = next((k for k in range(1, 4) if _prod(sizes[k:]) == features), None)
    if merged_from is None:
        return f"its {features} input features are not a merge of trailing axes of {sizes}"
    if channel_pos < merged_from:
        return "channels become time steps or batch entries, not input features"
    if channel_pos != merged_from:
        return "channels are not the leading factor of the merged feature axis (channel-last)"
    stride = _prod(sizes[channel_pos + 1:])
    in_node = reshape.inputs[0]
    for dep in reshape.dependencies:
        if dep.target == in_node:
            dep.index_mapping[0] = _FlattenIndexMapping(stride=stride, reverse=True)
    for dep in in_node.dependencies:
        if dep.target == reshape:
            dep.index_mapping[0] = _FlattenIndexMapping(stride=stride, reverse=False)
    return None


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def output_problem(graph: Any, rnn: nn.RNNBase) -> str | None:
    """Why the RNN's hidden units cannot be pruned through the graph, or None. Walks from the RNN
    over data-moving nodes to the layers that read its output."""
    node = graph.module2node.get(rnn)
    if node is None:
        return "not used in the traced forward pass"
    if getattr(rnn, "proj_size", 0):
        return "LSTM with proj_size (hidden units feed a projection)"
    stack, seen = list(node.outputs), set()
    multi = rnn.num_layers > 1 or rnn.bidirectional
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        kind = n.type.name
        if kind == "OUTPUT":
            return "its output is the model's output"
        if kind == "RESHAPE":
            return "its output is reshaped before the next layer (hidden units cannot be mapped)"
        grad_name = n.grad_fn.name() if n.grad_fn is not None and hasattr(n.grad_fn, "name") else ""
        if grad_name == STATE_NODE_NAME and n.outputs and multi:
            return "its final state h_n/c_n is read and the RNN is multi-layer or bidirectional"
        if kind in ("ELEMENTWISE", "SLICE", "CONCAT", "SPLIT", "UNBIND", "EXPAND") or \
                grad_name == STATE_NODE_NAME:
            stack.extend(n.outputs)
    return None
