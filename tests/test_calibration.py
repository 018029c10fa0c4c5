"""Calibration, the unsure band, and the report figures behind the reliability diagram and the
threshold explorer."""

from __future__ import annotations

import numpy as np
import pytest

from cifake_models import list_detectors, load_detector, load_report, results
from cifake_models.calibration import (
    BetaCalibration,
    IsotonicCalibration,
    UnsureBand,
    selective_curve,
    selective_figures,
    sigmoid,
)
from cifake_models.decision import DecisionRule, calibration_of
from cifake_models.labels import CLASSES, UNSURE
from cifake_models.metrics import classification_figures, expected_calibration_error, reliability, threshold_sweep

FAKE = CLASSES.index("FAKE")


def overconfident(n: int = 20000, seed: int = 0, temperature: float = 3.0, bias: float = 0.8, spread: float = 2.5):
    """Labels drawn from true log-odds z, and a detector that reports sigmoid(temperature * z - ...):
    too sure of itself, and leaning to FAKE."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, spread, n)
    labels = np.where(rng.random(n) < sigmoid(z), FAKE, 1 - FAKE)
    return labels, sigmoid(temperature * (z - bias))


def test_calibration_recovers_the_distortion_and_removes_the_error():
    labels, raw = overconfident()
    calibration = BetaCalibration.fit(labels, raw)
    # raw = sigmoid(3 (z - 0.8)), so z = (ln raw - ln(1 - raw)) / 3 + 0.8
    assert calibration.a == pytest.approx(1 / 3, rel=0.1) and calibration.b == pytest.approx(1 / 3, rel=0.1)
    assert calibration.c == pytest.approx(0.8, abs=0.15)
    before, after = expected_calibration_error(labels, raw), expected_calibration_error(labels, calibration.apply(raw))
    assert before > 0.05 and after < 0.015
    # Monotone: the order of images, hence ROC-AUC, is untouched.
    assert np.all(np.diff(calibration.apply(np.sort(raw))) >= 0)


def test_the_unsure_band_is_the_narrowest_that_reaches_the_target():
    labels, raw = overconfident(20000, seed=1, spread=6.0)
    p = BetaCalibration.fit(labels, raw).apply(raw)
    band = UnsureBand.choose(labels, p, threshold=0.5, target_accuracy=0.99)
    decided = selective_figures(labels, p, band, 0.5)
    assert decided["accuracy"] >= 0.99 and 0.2 < decided["coverage"] < 1
    narrower = UnsureBand.around(0.5, band.confidence - 0.0025)
    assert selective_figures(labels, p, narrower, 0.5)["accuracy"] < 0.99
    # Coverage only falls as the confidence asked for rises.
    curve = selective_curve(labels, p, 0.5)
    assert np.all(np.diff(curve.coverage) <= 0)


def test_a_detector_answers_unsure_inside_its_band_and_uses_its_calibration(tiny_assets):
    detector = load_detector("cnn", tiny_assets["checkpoints"])
    detector.rule = DecisionRule(BetaCalibration(), 0.5, UnsureBand(0.3, 0.8, 0.8, 0.99))
    p_fake = np.array([0.1, 0.9, 0.5, 0.75, 0.29, 0.8])
    proba = np.empty((len(p_fake), 2))
    proba[:, FAKE], proba[:, 1 - FAKE] = p_fake, 1 - p_fake
    expected = np.where(p_fake >= 0.8, "FAKE", np.where(p_fake < 0.3, "REAL", UNSURE))
    np.testing.assert_array_equal(detector.decide(proba), expected)
    detector.rule = DecisionRule(BetaCalibration(0.5, 2.0, 0.5, "test"), 0.5, UnsureBand(0.3, 0.8, 0.8, 0.99))
    raw = detector.uncalibrated(np.zeros((2, 32, 32, 3), np.uint8))
    np.testing.assert_allclose(
        detector.probabilities(np.zeros((2, 32, 32, 3), np.uint8))[:, FAKE],
        BetaCalibration(0.5, 2.0, 0.5).apply(raw[:, FAKE]),
    )


@pytest.mark.parametrize("name", list_detectors())
def test_training_records_calibration_and_band_on_validation(name, tiny_assets):
    meta = load_detector(name, tiny_assets["checkpoints"]).metadata
    grid = np.linspace(0, 1, 1001)
    assert np.all(np.diff(calibration_of(meta["calibration"]).apply(grid)) >= 0)  # whichever family won: monotone
    # Every family at every weight was compared, on held-out folds of validation
    assert (
        len(meta["calibration"]["candidates"]) == 2 * 4
        and meta["calibration"]["fitted_on"] in meta["calibration"]["candidates"]
    )
    assert set(meta["calibration"]["validation"]) == {"ece_before", "ece_after", "brier_before", "brier_after"}
    assert meta["unsure"]["low"] <= meta["threshold"]["value"] <= meta["unsure"]["high"]
    report = load_report(name, tiny_assets["reports"])
    assert report["unsure"]["test"]["coverage"] <= 1 and "ece_before" in report["calibration"]["test"]
    assert len(report["test"]["selective"]["coverage"]) == len(report["test"]["selective"]["confidence"])


@pytest.mark.parametrize(
    ("verdicts", "text", "majority"),
    [
        (["FAKE", "FAKE", UNSURE], "2 of 3 say FAKE, 1 unsure", "FAKE"),
        (["FAKE", UNSURE], "1 of 2 says FAKE, 1 unsure", "undecided"),
        ([UNSURE, UNSURE], "all 2 unsure", "undecided"),
        (["REAL", "FAKE", UNSURE, UNSURE], "split: 1 FAKE, 1 REAL, 2 unsure", "undecided"),
    ],
)
def test_agreement_counts_the_unsure(verdicts, text, majority):
    verdicts = {f"d{i}": v for i, v in enumerate(verdicts)}
    assert results.agreement(verdicts) == text
    assert results.majority(verdicts) == majority


def test_the_threshold_sweep_gives_the_confusion_matrix_at_any_cut():
    rng = np.random.default_rng(0)
    labels, p = rng.integers(0, 2, 500), rng.random(500)
    sweep = threshold_sweep(labels, p, threshold=0.4321)
    for t in (0.0, 0.25, 0.4321, 0.9, 1.0):
        i = sweep["threshold"].index(t)
        tp, fp = sweep["fake_called_fake"][i], sweep["real_called_fake"][i]
        matrix = [[tp, sweep["n_fake"] - tp], [fp, sweep["n_real"] - fp]]  # rows FAKE, REAL as in CLASSES
        assert matrix == classification_figures(labels, p, t)["confusion_matrix"]


def test_reliability_bins_cover_every_image_and_track_the_truth():
    labels, raw = overconfident(5000)
    bins = reliability(labels, raw)
    assert sum(bins["count"]) == 5000
    # The overconfident detector's top bin holds fewer FAKEs than it claims.
    assert bins["fake_share"][-1] < bins["p_fake_mean"][-1] - 0.02


def test_one_sided_overconfidence_needs_the_second_slope():
    """Overconfident about FAKE only: beta calibration mends it, one shared slope cannot."""
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2.5, 20000)
    labels = np.where(rng.random(len(z)) < sigmoid(z), FAKE, 1 - FAKE)
    raw = sigmoid(np.where(z > 0, 3 * z, z))
    calibration = BetaCalibration.fit(labels, raw)
    assert expected_calibration_error(labels, calibration.apply(raw)) < 0.015
    shared = BetaCalibration.fit_shared_slope(labels, raw)
    assert expected_calibration_error(labels, shared.apply(raw)) > 2 * expected_calibration_error(
        labels, calibration.apply(raw)
    )


def test_weights_move_the_fit_towards_the_images_that_weigh_more():
    """Two populations that need different maps: the weighted fit lands nearer the heavier one."""
    clean_labels, clean_raw = overconfident(20000, seed=4, temperature=1.0)
    copy_labels, copy_raw = overconfident(20000, seed=5, temperature=3.0)
    labels, raw = np.concatenate([clean_labels, copy_labels]), np.concatenate([clean_raw, copy_raw])
    fits = {
        share: BetaCalibration.fit(labels, raw, np.r_[np.full(20000, 1 - share), np.full(20000, share)] * 2)
        for share in (0, 0.1, 0.5, 0.9, 1)
    }
    slope = {share: (fit.a + fit.b) / 2 for share, fit in fits.items()}  # 1 suits the clean images, 1/3 the copies
    assert slope[0] > slope[0.1] > slope[0.5] > slope[0.9] > slope[1]
    assert slope[0] == pytest.approx(1.0, abs=0.1) and slope[1] == pytest.approx(1 / 3, abs=0.05)
    equal = BetaCalibration.fit(labels, raw, np.ones(len(labels)))
    assert equal == BetaCalibration.fit(labels, raw)


def staircase(n: int = 20000, seed: int = 6):
    """A detector whose P(FAKE) is right about the order of images but whose reliability curve is
    a staircase: a shape no smooth two-slope curve follows."""
    rng = np.random.default_rng(seed)
    raw = rng.random(n)
    truth = np.select([raw < 0.4, raw < 0.6, raw < 0.9], [0.05, 0.5, 0.6], 0.97)
    return np.where(rng.random(n) < truth, FAKE, 1 - FAKE), raw


def test_isotonic_calibration_follows_a_shape_beta_calibration_cannot():
    labels, raw = staircase()
    fit, held_out = slice(0, 10000), slice(10000, None)
    isotonic = IsotonicCalibration.fit(labels[fit], raw[fit])
    beta = BetaCalibration.fit(labels[fit], raw[fit])
    iso_ece = expected_calibration_error(labels[held_out], isotonic.apply(raw[held_out]))
    beta_ece = expected_calibration_error(labels[held_out], beta.apply(raw[held_out]))
    assert iso_ece < 0.015 and beta_ece > 2 * iso_ece
    assert isotonic.apply(np.array([0.2, 0.5, 0.95])) == pytest.approx([0.05, 0.5, 0.97], abs=0.03)


def test_isotonic_calibration_keeps_the_order_of_images():
    """Strictly increasing (the identity's small share breaks the steps' ties), so ROC-AUC and
    the threshold search see the raw order."""
    from sklearn.metrics import roc_auc_score

    labels, raw = staircase(seed=7)
    calibrated = IsotonicCalibration.fit(labels, raw).apply(raw)
    order = np.argsort(raw)
    assert np.all(np.diff(calibrated[order]) > 0)
    assert roc_auc_score(labels == FAKE, calibrated) == roc_auc_score(labels == FAKE, raw)


@pytest.mark.parametrize("family", [BetaCalibration, IsotonicCalibration])
def test_a_calibration_comes_back_from_the_checkpoint_metadata(family):
    import json

    labels, raw = staircase(4000, seed=8)
    fitted = family.fit(labels, raw)
    stored = json.loads(json.dumps(fitted.to_dict()))  # as the safetensors header holds it
    back = calibration_of(stored)
    assert type(back) is family
    np.testing.assert_array_equal(back.apply(raw), fitted.apply(raw))
