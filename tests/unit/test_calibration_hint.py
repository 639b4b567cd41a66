"""(issue 27) The hint for a missing calibration set says what this model needs (channels and
size), and never points an RGB model at the built-in grey 28×28 Fashion-MNIST set."""

from __future__ import annotations

import pytest

from edgekit.errors import EdgekitError
from edgekit.spec import InputSpec

RGB = InputSpec(shape=(1, 3, 64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
GREY = InputSpec(shape=(1, 1, 32, 32), mean=(0.5,), std=(0.25,))


@pytest.mark.parametrize("spec,needs", [(RGB, "RGB images, 64×64 after preprocessing (input "
                                               "3×64×64)"),
                                        (GREY, "grey images, 32×32 after preprocessing")])
def test_compress_hint_names_what_the_model_takes(spec, needs):
    from edgekit.quant.calibration import default_calibration_source

    with pytest.raises(EdgekitError) as err:
        default_calibration_source(spec)
    assert needs in err.value.hint
    assert "fashion" not in err.value.hint.lower() and "28" not in err.value.hint


def test_export_hint_names_what_the_model_takes():
    pytest.importorskip("openvino", reason="OpenVINO not installed (pip install edgekit[openvino])")
    from edgekit.targets.openvino import load_calibration

    with pytest.raises(EdgekitError) as err:
        load_calibration(None, RGB)
    assert "RGB images, 64×64" in err.value.hint and "fashion" not in err.value.hint.lower()
