"""The scope report: ``python -m train.evaluate --only scope`` (or ``python -m train.scope_eval``) writes scope.json.

Per scope set part (kept aside, and tuning, labelled as such): the score's AUROC against CIFAKE test, the share
flagged, and every detector's FAKE/REAL/UNSURE/out-of-scope shares; the share of test images and of their suite
copies flagged; every detector's accuracy on the in-scope test images beside all of them.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cifake_models import REPORT_DIR, get_spec, load_detector
from cifake_models.calibration import called_fake
from cifake_models.checkpoint import file_sha256, write_json
from cifake_models.data import default_data_dir, load_split
from cifake_models.inference import predict_all
from cifake_models.labels import FAKE, FAKE_LABEL, OUT_OF_SCOPE, REAL_LABEL, UNSURE
from cifake_models.registry import COMMITTEE
from cifake_models.robustness import balanced_sample, perturb_all
from cifake_models.scope import FEATURES_OF, SCOPE_FILE, SCOPE_REPORT, ScopeScorer, load_scope

from .commands import checkpoint_command, parse
from .scope_sets import drawing_set, photo_set

VERDICTS = (FAKE_LABEL, REAL_LABEL, UNSURE, OUT_OF_SCOPE)
BINS = 60  # of the score distributions the Evaluation tab plots


def scope_parts(seed: int = 0) -> dict[str, np.ndarray]:
    """Each reported part of the scope sets, named with what it is and whether it was kept aside."""
    photos, drawings = photo_set(seed), drawing_set(seed)
    parts = {}
    for part in ("kept", "tuning"):
        label = "kept aside" if part == "kept" else "tuning"
        parts[f"photo crops, not CIFAR classes ({label})"] = photos.part(part, False)
        parts[f"non-photographs ({label})"] = drawings.part(part)
    parts["photo crops, CIFAR classes (kept aside)"] = photos.part("kept", True)
    return {name: images for name, images in parts.items() if len(images)}


def verdict_shares(detectors: dict, images: np.ndarray, in_scope: np.ndarray) -> dict[str, dict[str, float]]:
    """Each detector's share of each verdict, out of scope overriding the detector's own."""
    _, verdicts, errors = predict_all(detectors, images)
    if errors:
        raise RuntimeError(f"detectors failed: {errors}")
    return {
        name: {v: float(np.mean(np.where(in_scope, verdicts[name], OUT_OF_SCOPE) == v)) for v in VERDICTS}
        for name in verdicts
    }


def accuracy_in_scope(detectors: dict, images: np.ndarray, labels: np.ndarray, in_scope: np.ndarray) -> dict:
    """Each detector's accuracy at its threshold on all ``images`` and on those in scope."""
    probas, _, errors = predict_all(detectors, images)
    if errors:
        raise RuntimeError(f"detectors failed: {errors}")
    out = {}
    for name, proba in probas.items():
        right = called_fake(proba[:, FAKE], detectors[name].decision_rule.threshold) == (labels == FAKE)
        out[name] = {
            "all": float(right.mean()),
            "in_scope": float(right[in_scope].mean()),
            "n": len(labels),
            "n_in_scope": int(in_scope.sum()),
        }
    return out


def distributions(scores: dict[str, np.ndarray], cut: float) -> dict:
    """Histograms of each set's scores on shared bins, and the coverage trade-off: as the cut moves, the
    share of CIFAKE test kept in scope against the share of each scope set flagged."""
    pooled = np.concatenate(list(scores.values()))
    edges = np.linspace(np.quantile(pooled, 0.001), np.quantile(pooled, 0.999), BINS + 1)
    cuts = np.unique(np.r_[np.quantile(scores["CIFAKE test"], np.linspace(0.5, 1, 51)), cut])
    return {
        "edges": edges.round(4).tolist(),
        "counts": {
            name: np.histogram(np.clip(s, edges[0], edges[-1]), edges)[0].tolist() for name, s in scores.items()
        },
        "tradeoff": {
            "cuts": cuts.round(4).tolist(),
            "in_scope": {name: [float(np.mean(s <= c)) for c in cuts] for name, s in scores.items()},
        },
    }


def drawn(n: int, limit: int) -> np.ndarray:
    """A seeded random ``limit`` of ``n`` rows, in order: what a smoke run (``--limit``) scores."""
    return np.sort(np.random.default_rng(0).choice(n, min(limit, n), replace=False))


def scope_report(
    scorer: ScopeScorer, detectors: dict, data_dir: Path, sample: int, suite_sample: int, limit: int | None = None
) -> dict:
    test = load_split(data_dir, "test")
    if limit:
        test = test.subset(drawn(len(test), limit))
    test_scores = scorer.score(test.images)
    rule = scorer.rule
    suite_rows = balanced_sample(test.labels, suite_sample, 1)
    suite = {
        p.name: float(np.mean(~rule.in_scope(scorer.score(batch))))
        for p, batch in perturb_all(test.images[suite_rows]).items()
    }
    sets, all_scores = {}, {"CIFAKE test": test_scores}
    for name, images in scope_parts().items():
        if limit:  # of each part too
            images = images[drawn(len(images), limit)]
        scores = all_scores[name] = scorer.score(images)
        y = np.r_[np.zeros(len(test_scores)), np.ones(len(scores))]
        sets[name] = {
            "n": len(images),
            "auroc_vs_test": float(roc_auc_score(y, np.r_[test_scores, scores])),
            "flagged": float(np.mean(~rule.in_scope(scores))),
            "verdicts": verdict_shares(detectors, images, rule.in_scope(scores)),
        }
    rows = balanced_sample(test.labels, sample, 2)
    return {
        "rule": {"cut": rule.cut, "target_share": rule.target_share},
        "scope_file": {
            "file": SCOPE_FILE,
            "sha256": file_sha256(scorer.path) if scorer.path else None,
            "fitted": scorer.model.metadata,
        },
        "test": {"n": len(test), "flagged": float(np.mean(~rule.in_scope(test_scores)))},
        "suite": {
            "n": len(suite_rows),
            "flagged": suite,
            "mean_flagged": float(np.mean(list(suite.values()))),
            "worst_flagged": float(max(suite.values())),
        },
        "sets": sets,
        "distributions": distributions(all_scores, rule.cut),
        "accuracy": accuracy_in_scope(
            detectors, test.images[rows], test.labels[rows], rule.in_scope(test_scores[rows])
        ),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_report(
    names: list[str],
    checkpoints: Path,
    reports: Path,
    data_dir: Path | None,
    sample: int = 4000,
    suite_sample: int = 1000,
    limit: int | None = None,
) -> dict:
    """Load ``names`` and the scope score from ``checkpoints``, write <reports>/scope.json, print its figures."""
    detectors = {}
    for name in names:
        detectors[name] = load_detector(name, checkpoints, loaded=detectors)
    scorer = load_scope(checkpoints, detectors.get(FEATURES_OF) or load_detector(FEATURES_OF, checkpoints))
    report = scope_report(scorer, detectors, data_dir or default_data_dir(), sample, suite_sample, limit)
    write_json(reports / SCOPE_REPORT, report)
    print(
        f"scope: test flagged {report['test']['flagged']:.2%}; suite mean {report['suite']['mean_flagged']:.2%}, "
        f"worst {report['suite']['worst_flagged']:.2%}"
    )
    for name, figures in report["sets"].items():
        print(
            f"{name}: n {figures['n']}, AUROC {figures['auroc_vs_test']:.3f}, flagged {figures['flagged']:.2%}, "
            f"committee FAKE {figures['verdicts'].get('committee', {}).get('FAKE', float('nan')):.2%}"
        )
    for name, acc in report["accuracy"].items():
        print(f"{name}: accuracy {acc['all']:.2%} all, {acc['in_scope']:.2%} in scope ({acc['n_in_scope']}/{acc['n']})")
    return report


def markdown(report: dict) -> str:
    """The tables of docs/scope.md: per scope set, then per detector."""
    committee = lambda f: f["verdicts"].get(COMMITTEE, {})  # noqa: E731
    lines = [
        "| set | images | AUROC vs CIFAKE test | flagged out of scope | committee FAKE | committee REAL "
        "| committee UNSURE |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| CIFAKE test | {report['test']['n']:,} | | {report['test']['flagged']:.1%} | | | |",
        f"| CIFAKE test under the suite (mean / worst of {len(report['suite']['flagged'])}) | "
        f"{report['suite']['n']:,} each | | {report['suite']['mean_flagged']:.1%} / "
        f"{report['suite']['worst_flagged']:.1%} | | | |",
    ]
    for name, f in report["sets"].items():
        c = committee(f)
        lines.append(
            f"| {name} | {f['n']} | {f['auroc_vs_test']:.3f} | {f['flagged']:.1%} | {c.get('FAKE', 0):.1%} "
            f"| {c.get('REAL', 0):.1%} | {c.get('UNSURE', 0):.1%} |"
        )
    lines += ["", "| detector | accuracy, all | accuracy, in scope | images in scope |", "| --- | ---: | ---: | ---: |"]
    for name, a in report["accuracy"].items():
        lines.append(
            f"| {get_spec(name).title} | {a['all']:.2%} | {a['in_scope']:.2%} | {a['n_in_scope']:,} of {a['n']:,} |"
        )
    return "\n".join(lines)


def summary_markdown(report: dict) -> str:
    """The README's short scope table: the kept-aside sets and CIFAKE's own images."""
    lines = [
        "| images (kept-aside sets only) | AUROC vs CIFAKE test | flagged out of scope | committee says FAKE |",
        "| --- | ---: | ---: | ---: |",
        f"| CIFAKE test | | {report['test']['flagged']:.1%} | |",
        f"| CIFAKE test under the suite (mean / worst change) | | {report['suite']['mean_flagged']:.1%} / "
        f"{report['suite']['worst_flagged']:.1%} | |",
    ]
    for name, f in report["sets"].items():
        if "kept aside" in name:
            fake = f["verdicts"].get(COMMITTEE, {}).get(FAKE_LABEL, 0)
            lines.append(
                f"| {name.replace(' (kept aside)', '')} | {f['auroc_vs_test']:.3f} | {f['flagged']:.1%} | {fake:.1%} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_command("python -m train.scope_eval", __doc__)
    parser.add_argument("--reports", type=Path, default=REPORT_DIR, help="default: %(default)s")
    parser.add_argument("--sample", type=int, default=4000, help="balanced test images for accuracy in scope")
    parser.add_argument("--suite-sample", type=int, default=1000, help="balanced test images under the suite")
    parser.add_argument(
        "--limit", type=int, help="score a random subset of the test split and of each set (smoke runs only)"
    )
    parser.add_argument("--table", action="store_true", help="print scope.json's tables and stop")
    args = parse(parser, argv)
    if args.table:
        print(markdown(json.loads((args.reports / SCOPE_REPORT).read_text())))
        return 0
    write_report(args.detectors, args.checkpoints, args.reports, args.data, args.sample, args.suite_sample, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
