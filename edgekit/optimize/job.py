"""One optimize job as `edgekit optimize` and `edgekit.optimize(...)` both run it: the eval set
required, int8 calibrated on a sample of the training data when no calibration set is given,
the Optimizer built over the devices, and a folder this call created removed again when the
search is refused as bad input."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.data.given import DataSources
    from edgekit.optimize.records import OptimizeSummary
    from edgekit.optimize.search import Optimizer
    from edgekit.optimize.space import OptimizeSettings


def optimizer_for(checkpoint: str | Path, devices: list[Any], settings: OptimizeSettings,
                  out_dir: str | Path, data: DataSources, *, max_drop: float | None = None,
                  bundle: Any = None, **options: Any) -> Optimizer:
    """The Optimizer of `checkpoint` (its loaded `bundle` when the caller has it) on `devices`
    (profiles or fleet devices) with the search `settings`, measuring top-1 on `data.eval`
    against a drop of `max_drop` points (default 1.0); a source naming a file shipped with
    edgekit (calibration/fashion-mnist-512.npz) is found from any working directory. `options`: the Optimizer's own (train,
    cluster, allow_public_cluster)."""
    from edgekit.errors import InputError
    from edgekit.io.models import announce
    from edgekit.optimize.search import Optimizer

    if data.eval is None:
        raise InputError("optimize measures top-1 on each device and needs an eval set",
                         hint="pass --eval fashion-mnist:test (or your own labelled data)")
    data = data.resolved()  # a file shipped with edgekit, from any working directory (compress's)
    calib = data.calib
    if calib is None and data.train is not None:  # compress's rule (edgekit.api)
        calib = data.train  # a sample of it: the space's calib_size
        announce(f"calib: none given, so int8 calibrates on a sample of --train {data.train}")
    return Optimizer(checkpoint, devices, settings, out_dir=out_dir, eval_source=data.eval,
                     max_drop=1.0 if max_drop is None else max_drop, train_source=data.train,
                     calib_source=calib, eval_limit=data.eval_limit, data_dir=data.data_dir,
                     bundle=bundle, **options)


def run_optimizer(optimizer: Optimizer) -> OptimizeSummary:
    """The search's summary; a folder this run created goes again when it is refused as bad
    input after claiming it (nothing half-made stays)."""
    from edgekit.io.outputs import removed_on_refusal

    with removed_on_refusal(optimizer.out):
        return optimizer.run()
