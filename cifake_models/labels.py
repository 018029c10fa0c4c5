"""The class labels every detector answers with, and the verdict that is none of them."""

from __future__ import annotations

# Alphabetical, as torchvision's ImageFolder and the packed files order them.
CLASSES: tuple[str, ...] = ("FAKE", "REAL")
# The column of P(FAKE) in every [n, 2] probability array (columns in CLASSES order); FAKE is
# the positive class, the one a detector looks for.
FAKE = CLASSES.index("FAKE")
FAKE_LABEL, REAL_LABEL = CLASSES[FAKE], CLASSES[1 - FAKE]  # class names, as verdicts and API keys
UNSURE = "UNSURE"  # the verdict inside a detector's unsure band: not a class
OUT_OF_SCOPE = "OUT_OF_SCOPE"  # the verdict for an image unlike CIFAKE (cifake_models.scope): not a class
