"""A committee of detectors: a logistic regression on its members' logits, fitted on validation.

One regression is fitted per subset of members, so a member missing at serving time is left out
without a refit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .calibration import log_odds, sigmoid
from .checkpoint import CheckpointError, file_sha256, read_safetensors, save_safetensors
from .decision import DecisionRule
from .detector import Detector, check_recorded
from .labels import FAKE
from .recipes import CommitteeRecipe


def fit_subsets(
    member_fake: Mapping[str, np.ndarray], labels: np.ndarray, recipe: CommitteeRecipe
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regressions of FAKE on the members' logits, one per non-empty subset of members.

    Returns ``masks`` (bool ``[n_subsets, n_members]``) and ``coefficients``
    (``[n_subsets, n_members + 1]``: a weight per member, 0 where left out, then the intercept).
    """
    from sklearn.linear_model import LogisticRegression

    names = list(member_fake)
    features = np.stack([log_odds(member_fake[n]) for n in names], axis=1)
    is_fake = (np.asarray(labels) == FAKE).astype(int)
    masks, coefficients = [], []
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(range(len(names)), size):
            model = LogisticRegression(C=recipe.C, max_iter=1000).fit(features[:, subset], is_fake)
            row = np.zeros(len(names) + 1)
            row[list(subset)] = model.coef_[0]
            row[-1] = model.intercept_[0]
            mask = np.zeros(len(names), bool)
            mask[list(subset)] = True
            masks.append(mask)
            coefficients.append(row)
    return np.array(masks), np.array(coefficients)


class CommitteeDetector(Detector):
    """P(FAKE) = sigmoid(sum of weight x member logit + intercept), over the members it has."""

    records_views = False  # one view: each member averages its own

    def __init__(
        self,
        name: str,
        members: Mapping[str, Detector],
        member_names: Sequence[str],
        masks: np.ndarray,
        coefficients: np.ndarray,
        metadata: dict | None = None,
        unavailable: Mapping[str, str] | None = None,
        rule: DecisionRule | None = None,
    ):
        super().__init__(name, metadata, rule=rule)
        self.unavailable = dict(unavailable or {})  # member -> why it could not be loaded
        self.member_names = list(member_names)  # every member the regressions were fitted on, in order
        self.members = {n: members[n] for n in self.member_names if n in members}  # those loaded
        if not self.members:
            raise CheckpointError(f"{name}: none of its members ({', '.join(self.member_names)}) could be loaded")
        self.masks, self.coefficients = np.asarray(masks, bool), np.asarray(coefficients, np.float64)
        present = np.array([n in self.members for n in self.member_names])
        row = np.flatnonzero((self.masks == present).all(axis=1))
        if not len(row):
            raise CheckpointError(f"{name}: no regression stored for the members {sorted(self.members)}")
        self.weights = self.coefficients[row[0]]

    def combine(self, member_fake: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[n, 2]`` calibrated probabilities from the members' P(FAKE) (as each member returns
        it): what the committee answers, for callers that already ran its members."""
        return self.calibrate(self.combine_raw(member_fake))

    def combine_raw(self, member_fake: Mapping[str, np.ndarray]) -> np.ndarray:
        """The regression's probabilities, before the committee's own calibration."""
        z = np.full(len(next(iter(member_fake.values()))), self.weights[-1])
        for i, name in enumerate(self.member_names):
            if name in self.members:
                z += self.weights[i] * log_odds(member_fake[name])
        fake = sigmoid(z)
        proba = np.empty((len(z), 2))
        proba[:, FAKE], proba[:, 1 - FAKE] = fake, 1 - fake
        return proba

    def single_view(self, batch: np.ndarray) -> np.ndarray:
        return self.combine_raw({n: m.probabilities(batch)[:, FAKE] for n, m in self.members.items()})

    def save(self, path: str | Path) -> Path:
        tensors = {
            "masks": torch.as_tensor(self.masks, dtype=torch.uint8),
            "coefficients": torch.as_tensor(self.coefficients),
        }
        self.metadata = {**self.metadata, "members": self.member_names}
        return save_safetensors(path, tensors, self.metadata)

    @classmethod
    def load(
        cls, path: str | Path, name: str, load_member: Callable[[str], Detector], validated: bool = True
    ) -> CommitteeDetector:
        """Members come from ``load_member``; one that fails to load is left out, and
        :attr:`unavailable` says why. So is one whose checkpoint beside the committee's is not the
        file it was fitted on (retrained, recalibrated): its weight was fitted on another
        detector's answers, and it serves again once the committee is refitted."""
        tensors, metadata = read_safetensors(path)
        check_recorded(path, name, metadata)
        rule = cls.parse_rule(path, metadata)[1] if validated else None
        try:
            names, fitted_on = metadata["members"], metadata["member_checkpoints"]
            masks, coefficients = tensors["masks"].numpy(), tensors["coefficients"].numpy()
        except KeyError as error:
            raise CheckpointError(f"{path} is not a committee checkpoint: it lacks {error}") from error
        members, unavailable = {}, {}
        for member in names:
            try:
                detector = load_member(member)
                file = member_file(Path(path).parent, fitted_on[member]["file"])
                if file_sha256(file) != fitted_on[member]["sha256"]:
                    raise CheckpointError(
                        f"{file.name} changed since the committee was fitted (refit it: python -m train committee)"
                    )
                members[member] = detector
            except Exception as error:  # any unloadable or changed member is left out; the others serve
                unavailable[member] = f"{type(error).__name__}: {error}"
        return cls(name, members, names, masks, coefficients, metadata, unavailable, rule)


def member_file(folder: Path, name) -> Path:
    """The member checkpoint ``name`` the committee records, which must be a plain file name of a
    regular file in the committee's own ``folder`` (not a path: ``../..``, ``/dev/zero``)."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\0" in name or "\\" in name:
        raise CheckpointError(f"the committee names its member's file {name!r}, which is not a plain file name")
    file = folder / name
    if not file.is_file():
        raise CheckpointError(f"{name} is not a file in the checkpoint folder")
    return file
