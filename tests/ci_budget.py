"""CI has 30 minutes for the whole run (.ci/run: packages, install, the arm64 device, `make test`).
On the 2-core AMD EPYC (AVX2, no VNNI) the project's machine became on 2026-12-06, the suite that
took 1,400 s on the earlier Intel Xeon took 21.5 minutes to reach test_optimize_fleet_ray (about
half of it) in a clean-clone dry run, so the whole run is well over 30 minutes. The tests named here are kept out
of `make test` for time: they are the larger variants of what CI still runs (each area keeps at
least one end-to-end test in CI), and `make test-all` runs every one of them. Entries are chosen
from per-test seconds measured on that machine (`pytest --durations=0`); the list is not yet
enough to bring CI under 30 minutes there (see the session notes of 2026-12-06)."""

from __future__ import annotations

import pytest

# nodeid prefixes; each with the seconds it took on the AMD EPYC (2 cores) and what in CI still
# covers its area
DEFERRED: dict[str, str] = {
    # ~150 s for the three (qemu runs them ~10x slower); CI keeps LeNet-5 on the emulated device
    # (test_seed_model_on_emulated_arm64_matches_local) and the device-install tests
    "tests/e2e/test_arm64_device.py::test_other_seed_models_on_emulated_arm64_match_local":
        "the hybrid and row-RNN seed models on the emulated arm64 device",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the deferred tests `extended` before `-m "not extended"` deselects."""
    for item in items:
        if any(item.nodeid.startswith(prefix) for prefix in DEFERRED):
            item.add_marker(pytest.mark.extended)
