"""The shipped detectors' probabilities and verdicts on fixed images stay what they were.

Regenerate the fixture (only when a checkpoint is deliberately changed):
``python -m tests.test_shipped_probabilities``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from cifake_models import list_detectors, load_detector
from cifake_models.data import DEFAULT_DATA_DIRS, stored_files

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).with_name("data") / "shipped_probabilities.json"
EXAMPLES = ROOT / "assets" / "examples"
SHARED_DATA = DEFAULT_DATA_DIRS[-1]
TEST_IMAGES = 24  # spread evenly over the shared test split's 20,000 files
TOLERANCE = 1e-6


def fixed_images(names: list[str] | None = None) -> dict[str, Image.Image]:
    """The examples, then every ``20000 // TEST_IMAGES``-th file of the shared test split (when present)."""
    images = {f"examples/{p.name}": Image.open(p).copy() for p in sorted(EXAMPLES.glob("*.png"))}
    if (SHARED_DATA / "cifake-test.npz").is_file():
        step = 20000 // TEST_IMAGES
        for i, (name, _, data) in enumerate(stored_files(SHARED_DATA, "test")):
            if i % step == 0 and i < step * TEST_IMAGES and (names is None or name in names):
                images[name] = Image.open(io.BytesIO(data)).copy()
    return images


def answers(images: dict[str, Image.Image]) -> dict[str, dict]:
    """Each detector's P(FAKE) column order, probabilities and three-way verdicts on ``images``."""
    out = {}
    for name in list_detectors():
        detector = load_detector(name)
        proba = detector.predict_proba(list(images.values()))
        out[name] = {
            "classes": [str(c) for c in detector.classes_],
            "proba": proba.tolist(),
            "verdicts": [str(v) for v in detector.decide(proba)],
        }
    return out


def test_shipped_detectors_answer_as_recorded():
    """On the examples always, and on the test-split images where the shared data is here."""
    recorded = json.loads(FIXTURE.read_text())
    images = fixed_images(recorded["images"])
    assert [n for n in recorded["images"] if n.startswith("examples/")] == [
        n for n in images if n.startswith("examples/")
    ]
    rows = [recorded["images"].index(n) for n in images]
    for name, now in answers(images).items():
        before = recorded["detectors"][name]
        assert now["classes"] == before["classes"], name
        np.testing.assert_allclose(now["proba"], np.take(before["proba"], rows, axis=0), atol=TOLERANCE, err_msg=name)
        assert now["verdicts"] == [before["verdicts"][i] for i in rows], name


if __name__ == "__main__":
    images = fixed_images()
    FIXTURE.write_text(json.dumps({"images": list(images), "detectors": answers(images)}, indent=1) + "\n")
    print(f"wrote {FIXTURE}: {len(images)} images")
