"""Training and evaluation of the CIFAKE detectors: ``python -m train --help``."""
