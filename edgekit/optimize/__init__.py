"""Device-in-the-loop search (`edgekit optimize`): Optuna proposes candidates from a typed search
space (space.py), the existing passes and targets build them (build.py), each device measures
them with edgekit's one latency protocol (measure.py), every export and measurement is cached
(cache.py), and the fastest candidate within the accuracy budget that is not slower than the
original wins (search.py).

Called, this package is the API function edgekit.api.optimize: `edgekit.optimize(model, ...)`;
`edgekit.optimize.optimize` runs an Optimizer from a checkpoint and settings as before."""

import sys

from edgekit import _make_callable
from edgekit.optimize.space import OptimizeSettings, SearchSpace, parse_duration

__all__ = ["OptimizeSettings", "SearchSpace", "optimize", "parse_duration"]


def optimize(checkpoint, devices, settings, **kwargs):
    """Run the search; see edgekit.optimize.search.Optimizer."""
    from edgekit.optimize.search import Optimizer

    return Optimizer(checkpoint, devices, settings, **kwargs).run()


_make_callable(sys.modules[__name__])
