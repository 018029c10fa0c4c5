"""What the commands over trained checkpoints (``train.evaluate``, ``train.revalidate``) share:
their common options and loading the checkpoints they name; and :func:`limit_threads`, the ``--threads``
that every command taking it applies (``python -m train``, ``train.replay``, ``train.scope_fit`` too)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cifake_models import CHECKPOINT_DIR, CheckpointError, get_spec, list_detectors
from cifake_models.data import data_search_order
from cifake_models.detector import Detector

THREADS_HELP = "CPU threads for torch, and for the BLAS and OpenMP pools of NumPy, SciPy and scikit-learn"


def limit_threads(threads: int | None) -> None:
    """``threads`` (where given) for torch and for the BLAS and OpenMP pools that NumPy's, SciPy's and
    scikit-learn's fits use (the SVM's, the calibration's, the scope score's): left at their
    default, their idle threads spin on a busy machine (the calibration's small logistic fits ran
    10x slower on a loaded 2-core machine). For the whole process, as torch's own setting is: every
    command that takes ``--threads`` calls this once, before its work."""
    if not threads:
        return
    # threadpoolctl limits the libraries loaded when it is called: load SciPy's own BLAS and
    # scikit-learn's OpenMP first, so that the limit reaches them.
    import scipy.optimize  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


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
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refuse unknown detector names, and apply ``--threads`` (:func:`limit_threads`)."""
    args = parser.parse_args(argv)
    unknown = sorted(set(args.detectors) - set(list_detectors()))
    if unknown:
        parser.error(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(list_detectors())}")
    limit_threads(args.threads)
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
