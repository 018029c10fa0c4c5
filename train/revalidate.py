"""Redo the validation-time choices of trained checkpoints without retraining them:
``python -m train.revalidate [DETECTOR ...]``.
"""

from __future__ import annotations

import sys

from cifake_models import CheckpointError, get_spec
from cifake_models.data import default_data_dir, load_split, train_val_indices
from cifake_models.metrics import percent

from .commands import checkpoint_command, load_checkpoints, parse
from .metadata import held_out_split
from .validation import record_validation

HELP = """Redo the validation-time choices of trained checkpoints without retraining them.

``python -m train.revalidate [DETECTOR ...]`` rebuilds each checkpoint's validation split from
the split recorded in it (its fraction and seed; the fingerprint must match), chooses mirror
averaging, the calibration, the decision threshold and the unsure band as training does
(``train.validation.record_validation``)
and rewrites the checkpoint with them. The weights are not touched; the test split is not read.
"""  # the command's --help


def main(argv: list[str] | None = None) -> int:
    args = parse(checkpoint_command("python -m train.revalidate", HELP), argv)
    split = load_split(args.data or default_data_dir(), "train")
    detectors, failures = load_checkpoints(args.detectors, args.checkpoints, validated=False)
    for detector in detectors:
        spec = get_spec(detector.name)
        if spec.is_committee:
            # Its members as they are now on disk (this loop may just have rewritten them): the
            # regression was fitted on their answers, so a changed or missing one needs a refit.
            try:
                detector = spec.load(args.checkpoints, validated=False)
                stale = detector.unavailable
            except CheckpointError as error:
                stale = {"every member": str(error)}
            if stale:
                reasons = "; ".join(f"{member}: {why}" for member, why in stale.items())
                print(f"{detector.name}: skipped: refit it with python -m train committee ({reasons})", file=sys.stderr)
                failures += 1
                continue
        data = detector.metadata["data"]
        val = split.subset(train_val_indices(split.labels, *held_out_split(detector.metadata))[1])
        if val.fingerprint() != data.get("val_fingerprint"):
            print(
                f"{detector.name}: skipped: its validation split cannot be rebuilt from this data "
                "(fingerprints differ)",
                file=sys.stderr,
            )
            failures += 1
            continue
        record_validation(detector, val)
        detector.save(args.checkpoints / spec.checkpoint_file)
        test_time, validation = detector.metadata.get("test_time"), detector.metadata["validation"]
        views = ""
        if test_time:
            accuracy = test_time["validation_accuracy"]
            views = (
                f"mirror averaging {'on' if test_time['mirror_average'] else 'off'} (validation accuracy "
                f"{percent(accuracy['single'])} single, {percent(accuracy['mirror_average'])} averaged); "
            )
        robustness, calibration, unsure = (
            validation["robustness"],
            detector.metadata["calibration"],
            detector.metadata["unsure"],
        )
        print(
            f"{detector.name}: {views}threshold {detector.rule.threshold:.4f}; "
            f"validation accuracy {percent(validation['accuracy'])}, "
            f"ROC-AUC {validation['roc_auc']:.4f}; under the suite: mean {percent(robustness['mean_accuracy'])}, "
            f"worst {percent(robustness['worst']['accuracy'])} ({robustness['worst']['perturbation']}); "
            f"ECE {calibration['validation']['ece_before']:.4f} -> {calibration['validation']['ece_after']:.4f}; "
            f"unsure below {unsure['confidence']:.3f} confidence: decides {percent(unsure['validation']['coverage'])}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
