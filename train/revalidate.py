"""Redo the validation-time choices of trained checkpoints without retraining them.

``python -m train.revalidate [DETECTOR ...]`` rebuilds each checkpoint's validation split from
the split recorded in it (its fraction and seed; the fingerprint must match), chooses mirror
averaging and the decision threshold as training does (``train.common.record_validation``)
and rewrites the checkpoint with them. The weights are not touched; the test split is not read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cifake_models import CHECKPOINT_DIR, CheckpointError, get_spec, list_detectors
from cifake_models.data import default_data_dir, load_split, train_val_indices

from .common import record_validation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.revalidate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("detectors", nargs="*", metavar="DETECTOR", help=f"default: all ({', '.join(list_detectors())})")
    parser.add_argument("--data", type=Path, help="CIFAKE folder (default: $CIFAKE_DATA, then ../shared/data/cifake)")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINT_DIR, help="default: %(default)s")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.detectors) - set(list_detectors()))
    if unknown:
        parser.error(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(list_detectors())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_split(args.data or default_data_dir(), "train")
    failures = 0
    for name in args.detectors or list_detectors():
        spec = get_spec(name)
        try:
            detector = spec.load(args.checkpoints)
            data = detector.metadata["data"]
            val = split.subset(train_val_indices(split.labels, data["val_fraction"], data["split_seed"])[1])
            if val.fingerprint() != data["val_fingerprint"]:
                raise CheckpointError(f"its validation split ({data['n_val']} images) cannot be rebuilt from this data")
        except (CheckpointError, KeyError) as error:
            print(f"{name}: skipped: {error}", file=sys.stderr)
            failures += 1
            continue
        record_validation(detector, val)
        detector.save(args.checkpoints / spec.checkpoint_file)
        test_time, validation = detector.metadata["test_time"], detector.metadata["validation"]
        print(
            f"{name}: mirror averaging {'on' if test_time['mirror_average'] else 'off'} "
            f"(validation accuracy {test_time['validation_accuracy']['single']:.4f} single, "
            f"{test_time['validation_accuracy']['mirror_average']:.4f} averaged); threshold {detector.threshold:.4f}; "
            f"validation ROC-AUC {validation['roc_auc']:.4f}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
