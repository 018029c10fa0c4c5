"""Which checkpoint of a detector ships? ``python -m train.choose NAME FOLDER... [--ship]``:
the rule (validation figures only) is in ``--help``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
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

``--rule accuracy`` ships the most accurate instead, for a detector whose aim is clean accuracy
under a robustness bar (native-32's 98%): of the candidates kept as above whose validation suite
meets the bar (a mean drop of at most 2 points and a worst drop of at most 5 from their clean
accuracy on the suite's own images), the highest clean validation accuracy, ties going to the
robustness score; the shipped checkpoint is credited 0.1 point (10 of 10,000 validation images), so
a candidate must beat it by more than that. The shipped checkpoint stays where none meets the bar;
a shipped checkpoint over the bar is replaced by the most accurate kept candidate within it.
"""  # the command's --help

CLEAN_TOLERANCE = 0.015
RULES = ("robustness", "accuracy")
SHIPPED_CREDIT = 0.001  # --rule accuracy: about one standard error of a paired difference on 10,000 images


@dataclass(frozen=True)
class RobustnessBar:
    """The most accuracy the robustness suite may cost, from the clean accuracy on the same images."""

    mean_drop: float = 0.02
    worst_drop: float = 0.05

    def holds(self, suite: dict) -> bool:
        """Whether a checkpoint's recorded suite (``validation.robustness``) stays within the bar."""
        clean = suite["clean_accuracy"]
        # Rounded: accuracies on 1,000 images are whole thousandths, and a drop of exactly the bar meets it.
        mean_drop = round(clean - suite["mean_accuracy"], 9)
        worst_drop = round(clean - suite["worst"]["accuracy"], 9)
        return mean_drop <= self.mean_drop and worst_drop <= self.worst_drop


BAR = RobustnessBar()


def robustness_score(suite: dict) -> float:
    """The average of the suite's mean and worst-case accuracy (a checkpoint's ``validation.robustness``)."""
    return (suite["mean_accuracy"] + suite["worst"]["accuracy"]) / 2


def rank(rule: str, clean: float, suite: dict, is_shipped: bool) -> tuple[float, ...] | None:
    """How ``rule`` orders a kept candidate (higher ships), or None where it rules it out."""
    if rule == "robustness":
        return (robustness_score(suite),)
    if not BAR.holds(suite):
        return None
    # A candidate that only ties the credited shipped file does not replace it; among candidates, robustness.
    credited = round(clean + (SHIPPED_CREDIT if is_shipped else 0.0), 9)
    return (credited, float(is_shipped), robustness_score(suite))


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
    parser.add_argument(
        "--rule",
        choices=RULES,
        default="robustness",
        help="what the kept candidates are ranked by (default: %(default)s)",
    )
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
    best: tuple[Path, tuple[float, ...]] | None = None
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
        order = rank(args.rule, clean, suite, path == shipped) if eligible else None
        status = "eligible" if order else "over the robustness bar" if eligible else "not eligible"
        print(
            f"{path}: validation {clean:.2%} clean, suite mean {suite['mean_accuracy']:.2%}, "
            f"worst {suite['worst']['accuracy']:.2%}, score {robustness_score(suite):.2%} ({status})"
        )
        if order and (best is None or order > best[1]):
            best = (path, order)
    best = best or (shipped, ())  # the shipped one stays where nothing meets the rule
    print(f"{args.name}: {'keep ' if best[0] == shipped else ''}{best[0]}")
    if args.ship and best[0] != shipped:
        atomic_write(shipped, lambda tmp: shutil.copyfile(best[0], tmp))
        print(f"{args.name}: shipped {best[0]} as {shipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
