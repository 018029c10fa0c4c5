"""CIFAKE real-vs-AI detectors: one registry, one interface (``classes_``, ``predict_proba``)."""

from .checkpoint import CheckpointError
from .detector import Detector
from .labels import CLASSES
from .paths import CHECKPOINT_DIR, REPORT_DIR
from .registry import REGISTRY, DetectorSpec, get_spec, list_detectors, load_detector
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
