"""Which checkpoint of a detector ships? ``python -m train.choose NAME FOLDER... [--ship]``:
the rule (validation figures only) is in ``--help``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from cifake_models.checkpoint import CheckpointError, atomic_write
from cifake_models.paths import CHECKPOINT_DIR
from cifake_models.registry import DetectorSpec, get_spec

HELP = """Which checkpoint of a detector ships? ``python -m train.choose NAME FOLDER... [--ship]``

The rule, fixed before any test figure of the candidates was read, uses validation figures only
(each checkpoint records its own, robustness suite included): among the shipped checkpoint and
the candidates in the FOLDERs, keep those whose clean validation accuracy is within 1.5 points of
the shipped one's and, where the shipped one is above the paper's accuracy, still above it; of
those, the one with the highest robustness score ships: the average of its mean and its worst
validation accuracy under the robustness suite. A candidate validated on another split than the
shipped one's is skipped: its figures are not comparable, and its validation images may be ones
the shipped network trained on. ``--ship`` copies it into the checkpoint folder (the shipped file stays if it wins).
"""  # the command's --help

CLEAN_TOLERANCE = 0.015


def robustness_score(suite: dict) -> float:
    """The average of the suite's mean and worst-case accuracy (a checkpoint's ``validation.robustness``)."""
    return (suite["mean_accuracy"] + suite["worst"]["accuracy"]) / 2


def recorded(spec: DetectorSpec, path: Path) -> tuple[float, dict, str | None]:
    """The clean validation accuracy and robustness figures the checkpoint at ``path`` records,
    and its validation split's fingerprint. KeyError where it lacks them."""
    metadata = spec.stored_metadata(path.parent)
    validation = metadata["validation"]
    return validation["accuracy"], validation["robustness"], (metadata.get("data") or {}).get("val_fingerprint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a network of the registry, or the SVM")
    parser.add_argument("folders", nargs="+", type=Path, help="folders holding a candidate checkpoint of it")
    parser.add_argument(
        "--checkpoints", type=Path, default=CHECKPOINT_DIR, help="where the shipped one lives (default: %(default)s)"
    )
    parser.add_argument("--ship", action="store_true", help="copy the chosen checkpoint into --checkpoints")
    args = parser.parse_args(argv)
    spec = get_spec(args.name)
    shipped = args.checkpoints / spec.checkpoint_file
    try:
        shipped_clean, _, split = recorded(spec, shipped)
    except KeyError as error:
        print(
            f"error: the shipped {shipped} has no validation figures to compare with (it records no {error}); "
            f"record them with python -m train.revalidate {spec.name} --checkpoints {args.checkpoints}",
            file=sys.stderr,
        )
        return 2
    except (CheckpointError, OSError) as error:
        print(f"error: the shipped checkpoint to compare with cannot be read: {error}", file=sys.stderr)
        return 2
    paper = spec.paper.accuracy if spec.paper else None
    best: tuple[Path, float] | None = None
    for path in [shipped, *(folder / spec.checkpoint_file for folder in args.folders)]:
        try:
            clean, suite, candidate_split = recorded(spec, path)
        except (CheckpointError, OSError, KeyError) as error:
            print(f"{path}: skipped ({error})")
            continue
        if candidate_split != split:
            print(
                f"{path}: skipped (validated on another split than the shipped checkpoint: "
                f"{candidate_split}, not {split})"
            )
            continue
        eligible = clean >= shipped_clean - CLEAN_TOLERANCE and (
            paper is None or shipped_clean <= paper or clean > paper
        )
        robustness = robustness_score(suite)
        print(
            f"{path}: validation {clean:.2%} clean, suite mean {suite['mean_accuracy']:.2%}, "
            f"worst {suite['worst']['accuracy']:.2%},"
            f" score {robustness:.2%} ({'eligible' if eligible else 'not eligible'})"
        )
        if eligible and (best is None or robustness > best[1]):
            best = (path, robustness)
    assert best is not None  # the shipped checkpoint is always eligible
    print(f"{args.name}: {'keep ' if best[0] == shipped else ''}{best[0]}")
    if args.ship and best[0] != shipped:
        atomic_write(shipped, lambda tmp: shutil.copyfile(best[0], tmp))
        print(f"{args.name}: shipped {best[0]} as {shipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
