import json

import pytest

from cifake_models import CHECKPOINT_DIR, REPORT_DIR, get_spec, list_detectors, load_report
from cifake_models.perturbations import SUITE
from cifake_models.reports import stale_report
from train import results_table


def test_every_shipped_checkpoint_has_its_own_report():
    # Figures the README and the app show must be of the checkpoints shipped beside them.
    for name in list_detectors():
        checkpoint = CHECKPOINT_DIR / get_spec(name).checkpoint_file
        if checkpoint.is_file():
            report = REPORT_DIR / f"{name}.json"
            assert report.is_file(), f"{name} ships without a report: run python -m train.evaluate {name}"
            stale = stale_report(load_report(name, REPORT_DIR), checkpoint)
            assert stale is None, f"{name}: {stale}"


def test_readme_and_docs_tables_match_the_shipped_reports():
    message = "README/docs tables differ from assets/reports: run python -m train.results_table"
    assert results_table.main(["--check"]) == 0, message


def _stale_documents(root):
    # README.md holds the short table and the full one; two docs pages share the others.
    (root / "docs").mkdir()
    pages = {
        "README.md": ["summary", "results"],
        "docs/a.md": ["robustness"],
        "docs/b.md": ["trust", "recipes", "scope_summary", "scope"],
    }
    for page, blocks in pages.items():
        stale = "\n".join(f"{start}\nstale\n{end}" for start, end in map(results_table.markers, blocks))
        (root / page).write_text(f"intro\n{stale}\nend\n")
    return [root / page for page in pages]


def test_a_mismatch_in_any_document_fails_the_check(tiny_assets, tmp_path):
    reports = ["--reports", str(tiny_assets["reports"]), "--root", str(tmp_path)]
    pages = _stale_documents(tmp_path)
    assert results_table.main([*reports]) == 0
    assert results_table.main([*reports, "--check"]) == 0
    for page in pages:
        text = page.read_text()
        page.write_text(text.replace("| **", "| **9", 1))  # one figure changed by hand
        assert results_table.main([*reports, "--check"]) == 1, page
        page.write_text(text)
    (tmp_path / "docs" / "b.md").write_text("no tables\n")  # a block that lives nowhere is an error
    with pytest.raises(ValueError, match="trust, recipes"):
        results_table.main([*reports, "--check"])


def test_tables_are_rendered_from_reports(tiny_assets, tmp_path):
    pages = _stale_documents(tmp_path)
    reports = ["--reports", str(tiny_assets["reports"]), "--root", str(tmp_path)]
    assert results_table.main([*reports, "--check"]) == 1
    assert results_table.main(reports) == 0
    texts = [page.read_text() for page in pages]
    for text in texts:
        assert "stale" not in text and text.startswith("intro\n") and text.endswith("end\n")
    text = "\n".join(texts)
    assert text.count("No scope report ships") == 2  # the tiny assets have none: both scope blocks say so
    per_detector = [block for block in results_table.BLOCKS if not block.startswith("scope")]
    for name in list_detectors():
        assert text.count(f"| {get_spec(name).title} |") == len(per_detector)  # one row in each table
    assert "| HOG + SVM | **100.00%** | **1.0000** | 81.43% | 0.8958 |" in texts[0]  # the short table
    assert "| 81.43% | **100.00%** |" in text  # tiny task: the SVM separates it perfectly
    assert "from scratch" in text
    for name in list_detectors():
        # The recipe row ends with validation accuracy after each stage, then single view -> mirror-averaged.
        report = json.loads((tiny_assets["reports"] / f"{name}.json").read_text())
        title = get_spec(name).title
        row = next(line for line in text.splitlines() if line.startswith(f"| {title} |") and "from scratch" in line)
        stages = "" if not report["history"] else f"{100 * report['history'][-1]['val_accuracy']:.2f}%"
        if report["test_time"] is None:  # the committee: its members chose their own views
            assert row.endswith(f"| {stages} |  |") and "logistic regression" in row
            continue
        accuracy = report["test_time"]["validation_accuracy"]
        single, averaged = (f"{100 * accuracy[view]:.2f}%" for view in ("single", "mirror_average"))
        mirrored = report["test_time"]["mirror_average"]
        chosen = f"{single} → **{averaged}**" if mirrored else f"**{single}** → {averaged}"
        assert row.endswith(f"| {stages} | {chosen} |")
    # The robustness table: clean accuracy, one column per perturbation of the suite, mean and worst.
    header = next(line for line in text.splitlines() if line.startswith("| detector | clean |"))
    assert header == "| detector | clean | " + " | ".join(p.name for p in SUITE) + " | mean | worst |"
    for name in list_detectors():
        robustness = json.loads((tiny_assets["reports"] / f"{name}.json").read_text())["robustness"]
        start = f"| {get_spec(name).title} | {100 * robustness['clean_accuracy']:.2f}% |"
        row = next(line for line in text.splitlines() if line.startswith(start))
        mean, worst = robustness["mean_accuracy"], robustness["worst"]["accuracy"]
        assert row.endswith(f"| **{100 * mean:.2f}%** | **{100 * worst:.2f}%** |")
    assert results_table.main([*reports, "--check"]) == 0


def test_trained_on_says_which_stage_ran_on_which_hardware():
    one_stage = {"training": {"hardware": "CPU A", "wall_time_s": 600}}
    assert results_table._trained_on(one_stage) == "CPU A; 10 min"
    stages = {
        "earlier_stages": [{"training": {"hardware": "CPU A"}}, {"training": {"hardware": "CPU A"}}],
        "training": {"hardware": "GPU B", "wall_time_s": 1800},
    }
    assert results_table._trained_on(stages) == "stages 1-2: CPU A; stage 3: GPU B; 30 min in all"
