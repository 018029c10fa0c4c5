"""The model repo's card (``README.md``), made from the shipped evaluation reports alone.

Its YAML metadata follows the Hub's model card spec (one ``model-index`` entry per detector, built
with huggingface_hub's ``EvalResult``); every figure in it is read from a report, none is typed."""

from __future__ import annotations

from collections.abc import Mapping

import yaml
from huggingface_hub import EvalResult
from huggingface_hub.repocard_data import ModelCardData, eval_results_to_model_index

from .metrics import percent
from .registry import get_spec
from .reports import describe_recipe

DATASET = ("cifake", "CIFAKE (Bird & Lotfi 2024): REAL from CIFAR-10, FAKE from Stable Diffusion 1.4")
TASK = "image-classification"
# (metric type in the model-index, the report's key in its "test" figures)
CARD_METRICS = (("accuracy", "accuracy"), ("roc_auc", "roc_auc"))
TAGS = [
    "image-classification",
    "ai-generated-image-detection",
    "cifake",
    "pytorch",
    "safetensors",
    "scikit-learn",
    "skops",
]
CITATION = """```bibtex
@article{bird2024cifake,
  title   = {CIFAKE: Image Classification and Explainable Identification of AI-Generated Synthetic Images},
  author  = {Bird, Jordan J. and Lotfi, Ahmad},
  journal = {IEEE Access},
  year    = {2024},
  note    = {arXiv:2303.14126}
}
@techreport{krizhevsky2009cifar,
  title  = {Learning Multiple Layers of Features from Tiny Images},
  author = {Krizhevsky, Alex and Hinton, Geoffrey},
  year   = {2009}
}
```"""


def eval_results(name: str, report: dict) -> list[EvalResult]:
    """A detector's test-split figures as the Hub's ``EvalResult``s (metric names carry its title)."""
    title = get_spec(name).title
    return [
        EvalResult(
            task_type=TASK,
            dataset_type=DATASET[0],
            dataset_name=DATASET[1],
            dataset_split="test",
            metric_type=metric,
            metric_value=report["test"][key],
            metric_name=f"{title} {metric}",
        )
        for metric, key in CARD_METRICS
    ]


def card_metadata(reports: Mapping[str, dict]) -> dict:
    """The card's YAML front matter: license, library, task, tags, data, and a model-index entry per detector."""
    data = ModelCardData(
        license="mit",
        library_name="pytorch",
        pipeline_tag=TASK,
        tags=TAGS,
        datasets=[DATASET[0]],
        metrics=[metric for metric, _ in CARD_METRICS],
    ).to_dict()
    data["model-index"] = [
        entry
        for name, report in reports.items()
        for entry in eval_results_to_model_index(name, eval_results(name, report))
    ]
    return data


def _figure_rows(reports: Mapping[str, dict]) -> list[str]:
    rows = [
        "| detector | accuracy | ROC-AUC | leak-free accuracy | mean / worst accuracy under upload-like changes "
        "| ECE (calibrated) | decides (not UNSURE) at accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, report in reports.items():
        test, robust = report["test"], report.get("robustness") or {}
        unsure = (report.get("unsure") or {}).get("test") or {}
        worst = (robust.get("worst") or {}).get("accuracy")
        rows.append(
            f"| {get_spec(name).title} (`{get_spec(name).checkpoint_file}`) | {percent(test['accuracy'])} "
            f"| {test['roc_auc']:.4f} | {percent(report['test_leak_free']['accuracy'])} "
            f"| {_maybe_percent(robust.get('mean_accuracy'))} / {_maybe_percent(worst)} | {test['ece']:.4f} "
            f"| {_maybe_percent(unsure.get('coverage'))} at {_maybe_percent(unsure.get('accuracy'))} |"
        )
    return rows


def _maybe_percent(value: float | None) -> str:
    return "n/a" if value is None else percent(value)


def _recipe_rows(reports: Mapping[str, dict]) -> list[str]:
    return [
        f"- **{get_spec(name).title}**: {report.get('initialisation') or 'not recorded'}. {describe_recipe(report)}."
        for name, report in reports.items()
    ]


def card_body(reports: Mapping[str, dict], space_repo: str | None = None) -> str:
    """The card's Markdown sections: use, scope, data and recipe, evaluation, limitations, citation."""
    first = next(iter(reports.values()))
    data, n_test = first["data"], first["test"]["n"]
    space = f" The Space [{space_repo}](https://huggingface.co/spaces/{space_repo}) serves them." if space_repo else ""
    return "\n".join(
        [
            "# CIFAKE real-vs-AI detectors",
            "",
            "Seven detectors that tell CIFAR-10 photos (REAL) from Stable Diffusion 1.4 images (FAKE) at 32x32: "
            "the five of Bird & Lotfi (2024), a network designed for 32x32 images and a committee of all of them, "
            f"trained from scratch by the `train` module of the CIFAKE detectors project.{space}",
            "",
            "Download them with `hf download OWNER/NAME --local-dir models`, then load one with "
            "`cifake_models.load_detector(name, 'models/checkpoints')`, or serve all of them with "
            "`CIFAKE_CHECKPOINTS=models/checkpoints CIFAKE_REPORTS=models/reports python app.py`. "
            "Each `reports/*.json` is the evaluation of the checkpoint beside it (it records the file's SHA-256).",
            "",
            "## Intended use",
            "",
            "Research and teaching on detecting synthetic images: reproducing and comparing detectors on CIFAKE, "
            "and showing how far a verdict can be trusted (calibrated probabilities, an UNSURE band).",
            "",
            "## Out-of-scope use",
            "",
            "- Images unlike CIFAKE's: anything that is not a small, CIFAR-10-like photo of one object, or that was "
            "resized, cropped, edited or compressed in ways outside the robustness suite below.",
            "- Images from other generators (Midjourney, DALL-E, later Stable Diffusion versions, GANs): the detectors "
            "saw only Stable Diffusion 1.4 as FAKE and say nothing reliable about others.",
            "- Any decision about a person, a publication, or a legal or journalistic matter. A verdict is a "
            "statistical guess about CIFAKE-like images, not evidence.",
            "",
            "## Training data and recipe",
            "",
            f"CIFAKE's train split ({data['n_train'] + data['n_val']:,} images; REAL from CIFAR-10, FAKE from "
            f"Stable Diffusion 1.4), of which {data['n_val']:,} "
            f"({data['val_fraction']:.0%}, seed {data['split_seed']}) "
            "are held out for validation: thresholds, calibration and every choice between runs are made there, "
            "never on the test split. Recipes, as the reports record them:",
            "",
            *_recipe_rows(reports),
            "",
            "## Evaluation, robustness and calibration",
            "",
            f"On CIFAKE's official test split ({n_test:,} images). *Leak-free* leaves out the test images whose "
            "pixels also occur in train. The robustness suite resizes, blurs, re-saves as JPEG and otherwise "
            "changes test images as uploads do; *decides* is the share of test images outside the UNSURE band, "
            "and the accuracy on them.",
            "",
            *_figure_rows(reports),
            "",
            "## Limitations",
            "",
            "- CIFAKE is 32x32: larger images are reduced to 32x32 first, and most of what distinguishes a modern "
            "generator's output at full size is lost.",
            "- The networks were trained from scratch on a CPU; the paper's ResNet-50, VGG-16 and DenseNet-121 "
            "started from ImageNet weights, so those rows are not the paper's experiment.",
            "- The FAKE class is one generator with one set of prompts (CIFAR-10's classes): a high accuracy here "
            "measures separation of these two sources, not of real and synthetic images in general.",
            "- Calibration and the UNSURE band were fitted on CIFAKE's validation split and hold for images like it.",
            "",
            "## Citation",
            "",
            CITATION,
            "",
        ]
    )


def model_card(reports: Mapping[str, dict], space_repo: str | None = None) -> str:
    """The whole ``README.md`` of the model repo: YAML front matter, then the sections."""
    front = yaml.safe_dump(card_metadata(reports), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n{card_body(reports, space_repo)}"
