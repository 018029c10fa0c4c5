"""The scope sets, the out-of-scope score (fit, cut, file, tie to its checkpoint) and the verdict it gives."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cifake_models import CheckpointError, get_spec, nets
from cifake_models.checkpoint import file_sha256
from cifake_models.data import Split
from cifake_models.detector import TorchDetector
from cifake_models.labels import CLASSES
from cifake_models.paths import CHECKPOINT_DIR
from cifake_models.results import COLUMNS, OUT_OF_SCOPE_TEXT, Prediction, csv_header, results
from cifake_models.scope import OUT_OF_SCOPE, SCOPE_FILE, SCOPE_REPORT, ScopeAnswer, ScopeModel, ScopeScorer, load_scope
from cifake_models.uploads import Decoded, Failed
from tests.conftest import synthetic_image
from train import scope_sets
from train.scope_fit import FitData, fit_scope, suite_copies


def test_photo_crops_are_split_by_source_photograph():
    first, again = scope_sets.photo_set(per_photo=2), scope_sets.photo_set(per_photo=2)
    assert np.array_equal(first.images, again.images) and first.images.shape[1:] == (32, 32, 3)
    tuning, kept = set(first.sources[first.parts == "tuning"]), set(first.sources[first.parts == "kept"])
    assert tuning and kept and not tuning & kept
    assert set(first.sources[first.in_cifar]) == {p.name for p in scope_sets.PHOTOS if p.in_cifar} == {"chelsea"}


def test_generated_images_are_split_by_seed_and_every_kind_is_in_both_parts():
    drawings = scope_sets.drawing_set(per_kind=2)
    for kind in scope_sets.GENERATORS:
        assert set(drawings.parts[drawings.sources == kind]) == {"tuning", "kept"}
    assert not drawings.in_cifar.any() and drawings.images.dtype == np.uint8


def tiny_native(seed: int = 0) -> TorchDetector:
    import torch

    torch.manual_seed(seed)
    return TorchDetector("native32", nets.native32(width=4), get_spec("native32").preprocessing)


def synthetic(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = np.stack([synthetic_image(int(y), rng) for y in labels])
    return Split(images, labels, np.array([f"{i}.jpg" for i in range(n)]))


@pytest.fixture(scope="module")
def fitted() -> tuple[ScopeModel, TorchDetector, FitData]:
    drawings = scope_sets.drawing_set(per_kind=4)
    tuning = drawings.parts == "tuning"
    val = synthetic(40, 2).images
    data = FitData(
        synthetic(80, 1),
        suite_copies(synthetic(20, 3).images, 0),
        val,
        suite_copies(val, 1),
        drawings.images[tuning],
        drawings.sources[tuning],
    )
    detector = tiny_native()
    return fit_scope(detector, data, 0.9, "0" * 64), detector, data


def test_the_cut_keeps_the_stated_share_of_validation_images_and_of_their_copies_in_scope(fitted):
    model, detector, data = fitted
    scorer = ScopeScorer(model, detector)
    for images in (data.val, data.val_copies):
        assert scorer.rule.in_scope(scorer.score(images)).mean() >= 0.9
    kept = scope_sets.drawing_set(per_kind=4)
    outside = kept.images[kept.parts == "kept"]
    inside = synthetic(40, 5).images
    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    auroc = roc_auc_score(y, np.r_[scorer.score(inside), scorer.score(outside)])
    assert auroc > 0.9 and model.metadata["fitted_on"]["scope_sets"] == "tuning parts only"


def test_the_scope_file_round_trips_and_is_tied_to_its_checkpoint(fitted, tmp_path):
    model, detector, data = fitted
    loaded = ScopeModel.load(model.save(tmp_path / SCOPE_FILE))
    assert loaded.rule == model.rule and loaded.metadata["checkpoint_sha256"] == "0" * 64
    assert np.allclose(ScopeScorer(loaded, detector).score(data.val), ScopeScorer(model, detector).score(data.val))
    with pytest.raises(CheckpointError, match="refit"):
        ScopeScorer(loaded, detector, checkpoint_sha256="1" * 64)
    (tmp_path / "bad.safetensors").write_bytes(b"not a scope file")
    with pytest.raises(CheckpointError):
        ScopeModel.load(tmp_path / "bad.safetensors")


def test_out_of_scope_turns_every_verdict_and_says_so_in_the_api_and_csv():
    items = [
        Decoded("in.png", np.zeros((32, 32, 3), np.uint8)),
        Failed("bad.png", "not an image"),
        Decoded("out.png", np.zeros((32, 32, 3), np.uint8)),
    ]
    proba = np.array([[0.9, 0.1], [0.2, 0.8]])
    answers = ({"cnn": proba}, {"cnn": np.array(["FAKE", "REAL"])}, {})
    scopes = [ScopeAnswer(-2.0, 0.5, True), ScopeAnswer(3.0, 0.5, False)]
    inside, bad, outside = results(items, answers, scopes=scopes)
    assert inside.predictions["cnn"] == Prediction(0.1, 0.9, "FAKE") and inside.majority == "FAKE"
    assert outside.predictions["cnn"].verdict == OUT_OF_SCOPE and outside.predictions["cnn"].p_fake == 0.2
    assert outside.majority == OUT_OF_SCOPE and outside.agreement == OUT_OF_SCOPE_TEXT
    record = outside.api_record()
    assert (record["in_scope"], record["scope_score"], record["scope_cut"]) == (False, 3.0, 0.5)
    assert record["predictions"]["cnn"]["in_scope"] is False
    row = dict(zip(csv_header(["cnn"]), outside.row(["cnn"])))
    assert (row["in_scope"], row["scope_score"], row["cnn_verdict"]) == (False, 3.0, OUT_OF_SCOPE)
    assert bad.api_record()["in_scope"] is None and "in_scope" in COLUMNS


shipped = pytest.mark.skipif(not (CHECKPOINT_DIR / SCOPE_FILE).is_file(), reason="no shipped scope score")


@shipped
def test_the_shipped_scope_score_is_of_the_shipped_native32_and_keeps_cifake_examples_in_scope():
    from PIL import Image

    from cifake_models import load_detector
    from cifake_models.images import stack_images
    from cifake_models.page.state import EXAMPLES_DIR

    scorer = load_scope(CHECKPOINT_DIR, load_detector("native32"))
    assert scorer.model.metadata["checkpoint_sha256"] == file_sha256(CHECKPOINT_DIR / "native32.safetensors")
    examples = stack_images([Image.open(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))])
    assert all(a.in_scope for a in scorer.answers(examples))
    flat = np.full((2, 32, 32, 3), (200, 30, 30), np.uint8)
    assert not any(a.in_scope for a in scorer.answers(flat))


@shipped
def test_the_shipped_scope_report_is_of_the_shipped_scope_file():
    import json

    from cifake_models.paths import REPORT_DIR

    report = json.loads((REPORT_DIR / SCOPE_REPORT).read_text())
    shipped_file = CHECKPOINT_DIR / SCOPE_FILE
    assert report["scope_file"]["sha256"] == file_sha256(shipped_file), "rerun python -m train.evaluate --only scope"
    assert report["rule"]["cut"] == ScopeModel.load(CHECKPOINT_DIR / SCOPE_FILE).rule.cut


def test_distributions_and_the_evaluation_tab_figures():
    from cifake_models.page.figures import scope_figures
    from train.scope_eval import distributions

    rng = np.random.default_rng(0)
    scores = {"CIFAKE test": rng.normal(0, 1, 500), "photos": rng.normal(4, 1, 50)}
    dist = distributions(scores, 1.5)
    assert sum(dist["counts"]["photos"]) == 50 and 1.5 in dist["tradeoff"]["cuts"]
    inside = dict(zip(dist["tradeoff"]["cuts"], dist["tradeoff"]["in_scope"]["CIFAKE test"]))
    assert inside[1.5] == np.mean(scores["CIFAKE test"] <= 1.5)
    report = {"distributions": dist, "rule": {"cut": 1.5}, "test": {"flagged": 1 - inside[1.5]}}
    histogram, tradeoff = scope_figures(report)
    assert len(histogram.data) == 2 and len(tradeoff.data) == 1
    assert "no scope report" in scope_figures(None)[0].layout.annotations[0].text
