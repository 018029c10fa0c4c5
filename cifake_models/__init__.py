"""CIFAKE real-vs-AI detectors: one registry, one interface (``classes_``, ``predict_proba``)."""

from .checkpoint import CheckpointError
from .data import CLASSES
from .detector import Detector
from .registry import CHECKPOINT_DIR, REGISTRY, REPORT_DIR, DetectorSpec, get_spec, list_detectors, load_detector
from .reports import load_report

__all__ = [
    "CHECKPOINT_DIR",
    "CLASSES",
    "REGISTRY",
    "REPORT_DIR",
    "CheckpointError",
    "Detector",
    "DetectorSpec",
    "get_spec",
    "list_detectors",
    "load_detector",
    "load_report",
]
