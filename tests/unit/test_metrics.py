"""edgekit.metrics.fidelity on constructed logits (issue 27): top-1 agreement says little on a
random-weight model's near-tied logits, so fidelity also reports the agreement on the samples
that are not near-ties and the logits' SQNR; near-ties are no longer excused when the logits'
error is as large as the logits (an all-zero int8 output passed the parity rule)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import ExportError
from edgekit.metrics import SQNR_IDENTICAL_DB, fidelity, sqnr_db
from edgekit.targets.onnx import Tolerance, check_parity


def decided(n: int = 40, classes: int = 10, margin: float = 3.0, seed: int = 0) -> np.ndarray:
    """Logits with a clear winner per sample (class i % classes, ahead by about `margin`)."""
    rng = np.random.default_rng(seed)
    logits = 0.1 * rng.standard_normal((n, classes))
    logits[np.arange(n), np.arange(n) % classes] += margin
    return logits.astype(np.float32)


def test_near_ties_flip_top1_but_sqnr_and_decisive_agreement_call_it_faithful():
    """Every reference a near-tie (logits within 1e-3 of each other around 5): an error of 1e-2
    flips most top-1s, yet it is 50 dB under the logits and no sample is decisive."""
    rng = np.random.default_rng(0)
    reference = 5.0 + 1e-3 * rng.standard_normal((64, 10))
    candidate = reference + 1e-2 * rng.standard_normal((64, 10))
    measured = fidelity(reference, candidate)
    assert measured["top1_agreement"] < 0.3
    assert measured["decisive_samples"] == 0 and measured["near_ties"] == 64
    assert measured["decisive_agreement"] == 1.0
    # 10·log10(25 / 1e-4) = 54 dB, within the sampling of the noise
    assert measured["sqnr_db"] == pytest.approx(54.0, abs=0.5)
    assert measured["cosine"] > 0.99999


def test_clear_margins_with_small_error_agree_everywhere():
    reference = decided()
    candidate = reference + np.float32(0.01)  # a constant shift: no top-1 changes
    measured = fidelity(reference, candidate)
    assert measured["top1_agreement"] == 1.0 and measured["decisive_agreement"] == 1.0
    assert measured["decisive_samples"] == 40 and measured["near_ties"] == 0
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum(np.full(reference.shape, np.float32(0.01), np.float64) ** 2))
    assert measured["sqnr_db"] == pytest.approx(10 * np.log10(signal / noise), abs=1e-3)


def test_a_real_mismatch_is_low_on_every_number():
    """A candidate that picks another class with a clear margin: its error (about 3 on the
    two classes swapped) is over every reference margin (about 2.8), so the tie rule alone
    would call all 40 samples near-ties; an error as large as the logits excuses nothing, and
    agreement and decisive agreement are both 0, SQNR under 0 dB, cosine low."""
    reference = decided()
    candidate = np.roll(reference, 1, axis=1)  # every winner moved to the next class
    measured = fidelity(reference, candidate)
    assert measured["tie_level"] > 2.8
    assert measured["top1_agreement"] == 0.0 and not measured["ties_excused"]
    assert measured["decisive_agreement"] == 0.0 and measured["decisive_samples"] == 40
    assert measured["sqnr_db"] < 0.0 and measured["cosine"] < 0.2


def test_sqnr_of_identical_and_of_zero_outputs():
    reference = decided()
    assert sqnr_db(reference, reference) == SQNR_IDENTICAL_DB
    assert sqnr_db(reference, np.zeros_like(reference)) == pytest.approx(0.0, abs=1e-9)
    assert sqnr_db(reference, -reference) == pytest.approx(10 * np.log10(1 / 4), abs=1e-9)
    measured = fidelity(reference, reference)
    assert measured["sqnr_db"] == SQNR_IDENTICAL_DB
    json.dumps(measured, allow_nan=False)  # finite: a manifest can hold it


def test_parity_does_not_excuse_near_ties_when_the_error_is_as_large_as_the_logits():
    """An all-zero int8 output: its error (the logits themselves) sets a tie level over every
    reference margin, so the decisive rule counted no sample and passed it with agreement 1.0.
    A tie level over MAX_TIE_FRACTION of the logits excuses nothing: every sample counts, and
    it fails."""
    reference = decided()
    reference[np.arange(40), np.arange(40) % 10] = 3.0  # every winner at 3, margins under 3
    zeros = np.zeros_like(reference)
    top2 = np.sort(reference, axis=1)[:, -2:]
    level = fidelity(reference, zeros)["tie_level"]
    assert level == 3.0 and (top2[:, 1] - top2[:, 0] < level).all()  # the margin rule alone
    # excused all 40
    with pytest.raises(ExportError) as err:
        check_parity(reference, zeros, what="int8", agreement="int8",
                     tolerance=Tolerance(0.0, 0.0, None), hint="h")
    assert ("top-1 agreement 0.100 on all 40 samples (near-ties not excused: the typical error "
            "3 is not small next to the typical largest logit 3; SQNR 0.0 dB) (need 0.90)"
            in err.value.message)
    # --min-agreement 0 (the matrix's int8 columns) still measures without gating
    measured = check_parity(reference, zeros, what="int8", agreement=0.0,
                            tolerance=Tolerance(0.0, 0.0, None), hint="h")
    assert measured["decisive_agreement"] == pytest.approx(0.1)
    assert measured["decisive_samples"] == 40 and not measured["ties_excused"]
    # a faithful candidate is judged on its decisive samples, as before
    close = check_parity(reference, reference + np.float32(0.01), what="int8", agreement="int8",
                         tolerance=Tolerance(0.0, 0.0, None), hint="h")
    assert close["ties_excused"] and close["decisive_agreement"] == 1.0


def test_an_exact_tie_flipped_by_rounding_is_no_disagreement_even_when_the_rest_match_bitwise():
    """OpenVINO ran an fp16 model bit-exact on 59 of 60 images (median error 0) and flipped the
    60th, whose two best logits were equal to ~1e-12: that is float rounding, not a verdict."""
    reference = decided(n=60)
    reference[59] = 0.0
    reference[59, :2] = 3.0  # classes 0 and 1 tie exactly
    candidate = reference.copy()
    candidate[59, 1] += np.float32(1e-6)  # the runner-up wins by one rounding step
    measured = fidelity(reference, candidate)
    assert measured["top1_agreement"] == pytest.approx(59 / 60)
    assert measured["near_ties"] == 1 and measured["decisive_agreement"] == 1.0
    # the floor is relative: a flip by a clear margin still counts
    candidate[59, 1] += np.float32(1.0)
    reference[59, 1] -= np.float32(0.5)
    assert fidelity(reference, candidate)["decisive_agreement"] < 1.0
