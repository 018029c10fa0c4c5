import json

from cifake_models import CHECKPOINT_DIR, REPORT_DIR, get_spec, list_detectors, load_report
from cifake_models.perturbations import SUITE
from cifake_models.reports import stale_report
from train import results_table


def test_every_shipped_checkpoint_has_its_own_report():
    # Figures the README and the app show must be of the checkpoints shipped beside them.
    for name in list_detectors():
        checkpoint = CHECKPOINT_DIR / get_spec(name).checkpoint_file
        if checkpoint.is_file():
            assert (REPORT_DIR / f"{name}.json").is_file(), f"{name} ships without a report: run python -m train.evaluate {name}"
            assert stale_report(load_report(name, REPORT_DIR), checkpoint) is None, f"{name}: {stale_report(load_report(name, REPORT_DIR), checkpoint)}"


def test_readme_tables_match_the_shipped_reports():
    assert results_table.main(["--check"]) == 0, "README tables differ from assets/reports: run python -m train.results_table"


def test_tables_are_rendered_from_reports(tiny_assets, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n" + "\n".join(f"{a}\nstale\n{b}" for a, b in map(results_table.markers, results_table.BLOCKS)) + "\nend\n")
    assert results_table.main(["--reports", str(tiny_assets["reports"]), "--readme", str(readme), "--check"]) == 1
    assert results_table.main(["--reports", str(tiny_assets["reports"]), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("end\n")
    for name in list_detectors():
        assert text.count(f"| {get_spec(name).title} |") == len(results_table.BLOCKS)  # one row in each table
    assert "| 81.43% | **100.00%** |" in text  # tiny task: the SVM separates it perfectly
    assert "from scratch" in text
    for name in list_detectors():
        # The recipe row ends with validation accuracy after each stage, then single view -> mirror-averaged.
        report = json.loads((tiny_assets["reports"] / f"{name}.json").read_text())
        row = next(line for line in text.splitlines() if line.startswith(f"| {get_spec(name).title} |") and "from scratch" in line)
        stages = "" if not report["history"] else f"{100 * report['history'][-1]['val_accuracy']:.2f}%"
        if report["test_time"] is None:  # the committee: its members chose their own views
            assert row.endswith(f"| {stages} |  |") and "logistic regression" in row
            continue
        single, averaged = (f"{100 * report['test_time']['validation_accuracy'][v]:.2f}%" for v in ("single", "mirror_average"))
        chosen = f"{single} → **{averaged}**" if report["test_time"]["mirror_average"] else f"**{single}** → {averaged}"
        assert row.endswith(f"| {stages} | {chosen} |")
    # The robustness table: clean accuracy, one column per perturbation of the suite, mean and worst.
    header = next(line for line in text.splitlines() if line.startswith("| detector | clean |"))
    assert header == "| detector | clean | " + " | ".join(p.name for p in SUITE) + " | mean | worst |"
    for name in list_detectors():
        robustness = json.loads((tiny_assets["reports"] / f"{name}.json").read_text())["robustness"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {get_spec(name).title} | {100 * robustness['clean_accuracy']:.2f}% |"))
        assert row.endswith(f"| **{100 * robustness['mean_accuracy']:.2f}%** | **{100 * robustness['worst']['accuracy']:.2f}%** |")
    assert results_table.main(["--reports", str(tiny_assets["reports"]), "--readme", str(readme), "--check"]) == 0


def test_trained_on_says_which_stage_ran_on_which_hardware():
    one_stage = {"training": {"hardware": "CPU A", "wall_time_s": 600}}
    assert results_table._trained_on(one_stage) == "CPU A; 10 min"
    stages = {
        "earlier_stages": [{"training": {"hardware": "CPU A"}}, {"training": {"hardware": "CPU A"}}],
        "training": {"hardware": "GPU B", "wall_time_s": 1800},
    }
    assert results_table._trained_on(stages) == "stages 1-2: CPU A; stage 3: GPU B; 30 min in all"
