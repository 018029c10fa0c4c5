"""Fit the committee on the validation split, from its members' checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cifake_models.checkpoint import CheckpointError, file_sha256
from cifake_models.committee import CommitteeDetector, fit_subsets
from cifake_models.data import Split
from cifake_models.labels import FAKE
from cifake_models.recipes import CommitteeRecipe
from cifake_models.registry import DetectorSpec, get_spec

from . import lineage
from .metadata import DataInfo, already_trained, checkpoint_metadata, with_new_fields
from .validation import record_calibration

log = logging.getLogger(__name__)


def fit_committee(
    spec: DetectorSpec, val: Split, recipe: CommitteeRecipe, out_dir: Path, data_info: DataInfo, resume: bool = False
) -> CommitteeDetector:
    """Fit the committee on its members' checkpoints in ``out_dir`` and write it beside them,
    where it loads them from (and checks that they are the files it was fitted on). Every member
    must have held out the same validation split: a member that trained on these images would be
    trusted for fitting them. ``resume``: keep a committee already fitted this way on these very
    members (``common.already_trained``); one whose members changed since is refitted."""
    if resume and (out_dir / spec.checkpoint_file).is_file():
        try:
            fitted = spec.load(out_dir)
        except CheckpointError as error:  # corrupt, of an older format, or another detector's: fitted anew
            log.info(f"{spec.name}: refitting: {error}")
        else:
            if fitted.unavailable:
                log.info(
                    f"{spec.name}: refitting: {', '.join(fitted.unavailable)} changed or missing since the last fit"
                )
            elif list(fitted.member_names) != list(spec.members):
                log.info(
                    f"{spec.name}: refitting: fitted on {', '.join(fitted.member_names)}, "
                    f"its members are now {', '.join(spec.members)}"
                )
            elif already_trained(
                spec,
                out_dir,
                {"recipe": recipe.to_dict(), "data": data_info.val_fingerprint},
                lambda metadata: {
                    "recipe": with_new_fields(metadata["recipe"], CommitteeRecipe),
                    "data": metadata["data"]["val_fingerprint"],
                },
            ):
                return fitted
    started = time.perf_counter()
    members = {name: get_spec(name).load(out_dir) for name in spec.members}
    for name, member in members.items():
        seen = (member.metadata.get("data") or {}).get("val_fingerprint")
        if seen != data_info.val_fingerprint:
            raise CheckpointError(
                f"{name} held out another validation split ({seen}, not {data_info.val_fingerprint}): "
                "the committee cannot be fitted on it"
            )
    log.info(f"{spec.name}: scoring {len(val)} validation images with {', '.join(members)}")
    member_fake = {name: member.probabilities(val.images)[:, FAKE] for name, member in members.items()}
    masks, coefficients = fit_subsets(member_fake, val.labels, recipe)
    detector = CommitteeDetector(spec.name, members, list(members), masks, coefficients)
    detector.metadata = checkpoint_metadata(
        spec, recipe.to_dict(), data_info, "none", history=[], wall_time_s=time.perf_counter() - started, device="cpu"
    )
    scratch = all(m.metadata.get("weights") == "none" for m in members.values())
    detector.metadata["initialisation"] = (
        "random (from scratch) members only, ImageNet weights were not used; "
        "the regression is fitted on the validation split"
        if scratch
        else "members' own (see each member); the regression is fitted on the validation split"
    )
    detector.metadata["member_checkpoints"] = {
        name: {"file": get_spec(name).checkpoint_file, "sha256": file_sha256(out_dir / get_spec(name).checkpoint_file)}
        for name in members
    }
    sources = {
        record["sha256"]: members[name].metadata for name, record in detector.metadata["member_checkpoints"].items()
    }
    detector.metadata["lineage"] = lineage.record(detector.metadata, sources)
    figures = record_calibration(detector, val, detector.combine_raw(member_fake)[:, FAKE])
    detector.save(out_dir / spec.checkpoint_file)
    weights = ", ".join(f"{n} {w:+.2f}" for n, w in zip(members, detector.weights))
    log.info(
        f"{spec.name}: weights {weights}; validation accuracy {figures['accuracy']:.4f}, "
        f"ROC-AUC {figures['roc_auc']:.4f}"
    )
    return detector
