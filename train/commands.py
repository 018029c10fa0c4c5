"""What the commands over trained checkpoints (``train.evaluate``, ``train.revalidate``) share:
their common options, and loading the checkpoints they name."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cifake_models import CHECKPOINT_DIR, CheckpointError, get_spec, list_detectors
from cifake_models.data import data_search_order
from cifake_models.detector import Detector


def checkpoint_command(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser holding the options every such command takes; add its own, then :func:`parse`."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "detectors", nargs="*", metavar="DETECTOR", help=f"default: all ({', '.join(list_detectors())})"
    )
    parser.add_argument("--data", type=Path, help=f"CIFAKE folder (default: {data_search_order()})")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINT_DIR, help="default: %(default)s")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refuse unknown detector names, and apply ``--threads``."""
    args = parser.parse_args(argv)
    unknown = sorted(set(args.detectors) - set(list_detectors()))
    if unknown:
        parser.error(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(list_detectors())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.detectors = args.detectors or list_detectors()
    return args


def load_checkpoints(names: list[str], checkpoint_dir: Path, validated: bool = True) -> tuple[list[Detector], int]:
    """The detectors whose checkpoints load, and how many did not (each reported on stderr);
    ``validated=False``: without their decision rules, to choose them again."""
    detectors, failures = [], 0
    for name in names:
        try:
            detectors.append(get_spec(name).load(checkpoint_dir, validated=validated))
        except CheckpointError as error:
            print(f"{name}: skipped: {error}", file=sys.stderr)
            failures += 1
    return detectors, failures
