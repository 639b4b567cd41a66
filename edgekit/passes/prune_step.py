"""Torch-Pruning's step over the Conv/Linear groups of one pruning run, watched.

Torch-Pruning 1.6 silently skips a group whose pruning would empty one of its layers, and has no
hook that shows the rejected groups; the only way to see them (to refuse a wipe-out and to name
a mistraced layer) is to wrap `check_pruning_group`. The wrapper is set on the run's own
DependencyGraph instance, never on the class, for the length of this one step, and removed
after. Pruning itself goes through the supported interactive step: Torch-Pruning yields each
accepted group and edgekit prunes it, so a failure there names the group's layer for certain.

round_to never empties a layer: Torch-Pruning rounds the channels a layer keeps down to a
multiple of round_to, which is 0 for a layer narrower than round_to after pruning (a
squeeze-excite squeeze of 8 at ratio 0.25 keeps 6 → 0). Such a layer keeps one multiple of
round_to (its whole width when it has no more), and the report says which layers and why.
`_round_to` is Torch-Pruning 1.6's one place that rounds; it is wrapped on the run's pruner
instance, for this step only, like check_pruning_group.
"""

from __future__ import annotations

from typing import Any

from edgekit.passes.prune_graph import (
    PruneError,
    WipeoutError,
    ignore_hint,
    module_in_traceback,
    name_of,
)


class ChannelStep:
    """One watched step of `run` (a channel_pruning run: its graph, pruner, names, reasons and
    result): what it rejected is collected, then refused with the layer named."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.graph, self.names = run.graph, run.names
        self.wiped: list[str] = []
        self.mistraced: list[tuple[str, str]] = []
        self.rounded: list[tuple[int, int, int]] = []  # (width, kept before rounding, kept)
        self.library_check = self.graph.check_pruning_group  # the library's own (bound) methods
        self.library_round = run.pruner._round_to

    def checked(self, group: Any) -> bool:
        """The library's check of `group`, remembering why a group it refuses was refused."""
        graph, run = self.graph, self.run
        root = group[0].dep.target.module
        if run.blocked_group(group):
            return False
        kept = next((run.kept_layers[dep.target.module] for dep, _ in group
                     if dep.target.module in run.kept_layers), None)
        if kept:  # a channel shuffle (edgekit.passes.shuffle_prune): its width stays
            run.reasons.setdefault(root, kept)
            return False
        ok = self.library_check(group)
        if ok:
            return ok
        root_channels = graph.get_out_channels(root)
        for dep, idxs in group:
            out = graph.is_out_channel_pruning_fn(dep.handler)
            if not out and not graph.is_in_channel_pruning_fn(dep.handler):
                continue
            size = (graph.get_out_channels if out else graph.get_in_channels)(dep.target.module)
            if size is None or size > len(idxs):
                continue
            if size == root_channels:
                self.wiped.append(f"{name_of(root, self.names)} ({root_channels} channels)")
            else:
                self.mistraced.append((name_of(root, self.names),
                                       name_of(dep.target.module, self.names)))
            break
        return ok

    def round_kept(self, n_pruned: int, current: int, round_to: int) -> int:
        """The library's rounding, except that a layer it would empty keeps one multiple."""
        n = self.library_round(n_pruned, current, round_to)
        if n >= current and n_pruned < current:
            keep = min(current, round_to)
            self.rounded.append((current, current - n_pruned, keep))
            return current - keep
        self.rounded.append((0, 0, 0))
        return n

    def checked_rounding(self, group: Any) -> bool:
        """`checked`, after noting (or refusing) the group whose rounding `round_kept` changed."""
        run = self.run
        root = group[0].dep.target.module
        width, wanted, keep = self.rounded.pop() if self.rounded else (0, 0, 0)
        self.rounded.clear()
        if width:
            why = (f"round_to {run.round_to}: {wanted} of its {width} channels would "
                   f"remain at ratio {run.ratio:g}, which rounds down to 0")
            if keep >= width:
                run.reasons.setdefault(root, f"{why}; kept whole")
                return False
            run.result.notes.append(f"{name_of(root, self.names)} keeps {keep} of {width} "
                                    f"channels: {why}")
        return self.checked(group)

    def prune(self) -> None:
        """The interactive step with the wrappers set on this run's instances only; a failure
        names the layer."""
        pruner = self.run.pruner
        if self.run.round_to:
            pruner._round_to = self.round_kept
        self.graph.check_pruning_group = self.checked_rounding if self.run.round_to \
            else self.checked
        try:
            for group in pruner.step(interactive=True):
                try:
                    group.prune()
                except Exception as exc:  # noqa: BLE001
                    layer = name_of(group[0].dep.target.module, self.names)
                    raise PruneError(f"Torch-Pruning failed to prune {layer}: "
                                     f"{type(exc).__name__}: {exc}",
                                     hint=ignore_hint(layer)) from None
        except PruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - raised while Torch-Pruning chose a group
            culprit = module_in_traceback(exc, self.names)
            raise PruneError(f"Torch-Pruning failed to prune{' ' + culprit if culprit else ''}: "
                             f"{type(exc).__name__}: {exc}", hint=ignore_hint(culprit)) from None
        finally:
            vars(self.graph).pop("check_pruning_group", None)
            vars(pruner).pop("_round_to", None)

    def refuse_rejected(self) -> None:
        """A group the library dropped because a coupled layer of another size ran out (a
        mistrace) or because its own layer would lose every channel (a wipe-out)."""
        if self.mistraced:
            root, other = self.mistraced[0]
            owner = other.rsplit(".", 1)[0] if other.endswith((".weight", ".bias")) else other
            raise PruneError(f"Torch-Pruning cannot trace {other}: it couples its sizes to the "
                             f"channels of {root}, which do not match", hint=ignore_hint(owner))
        if self.wiped:
            raise WipeoutError(
                f"pruning at ratio {self.run.ratio:g}{self.run.rounding_note()} would remove "
                f"every channel of {', '.join(self.wiped[:3])}",
                hint="lower the ratio (or --target-macs), lower --round-to, use --local, or "
                     "ignore that layer with --prune-ignore NAME")
