"""Validation: latency protocol and statistics, accuracy and fidelity, environment, budget gate.

Called, this package is the API function edgekit.api.validate: `edgekit.validate(folder, ...)`."""

import sys

from edgekit import _make_callable

_make_callable(sys.modules[__name__])
