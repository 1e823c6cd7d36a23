"""A compression sweep in one recipe (``student.variants``): unit keys (a recipe without variants keeps the
keys it had, variants that differ only in the soft objective share one control), the frontier, a tiny
sweep end to end with the hidden-state objective, and models addressed as ``student:VARIANT``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import pipeline_recipe, requires_minilm
from PIL import Image

from mtkd.errors import RecipeError
from mtkd.progress import NullProgress
from mtkd.recipe import load_recipe
from mtkd.stages.context import RunContext, load_tasks
from mtkd.stages.graph import plan_all, unit_key
from mtkd.stages.store import RunStore
from mtkd.stages.variants import dominates, find_variant, student_variants, variant_metrics

HIDDEN = {"type": "hidden-states", "base": {"type": "mixture", "alpha": 0.5}, "layers": [[1, 2]]}


def unit_keys(path: Path, overrides=()) -> dict[str, str]:
    """Every planned unit's key by id; each unit's output digest stands in as a function of its key."""
    recipe = load_recipe(path, overrides)
    ctx = RunContext(recipe, RunStore(Path("unused")), load_tasks(recipe), NullProgress())
    digests: dict = {}
    for units in plan_all(ctx).values():
        for u in units:
            digests[u.id] = unit_key(u, digests)
    return digests


#: The unit keys of the recipe below as mtkd computed them before student variants existed (commit 7594ac7):
#: a recipe without `variants` must keep them, so the teachers, students and controls of its run folders
#: are reused. (The report's key is the recipe hash, which holds this test's temporary paths.)
KEYS_BEFORE_VARIANTS = {
    "teacher:0": "70c8e0ba7ceac75f", "teacher:1": "2a28fe29f5c35cd2", "logits:0": "b870f275ba4389c8",
    "logits:1": "f78b0ade77e419eb", "soft-targets": "81c87e531a219900", "student:1": "bb645f8d26eaaf8e",
    "student:2": "9d324c3ebe334959", "control:1": "f922456fbbfb1502", "control:2": "e7ad921f80c839d7",
    "evaluate": "b1c3a333b705b889"}


@requires_minilm
def test_a_recipe_without_variants_keeps_its_unit_keys_and_hash(tmp_path):
    path = pipeline_recipe(tmp_path, student={"seeds": [1, 2], "control": True, "init_from_teacher": 0},
                           teachers={"members": [{"seed": 1}, {"seed": 2}]})
    keys = unit_keys(path)
    keys.pop("report")
    assert keys == KEYS_BEFORE_VARIANTS
    resolved = load_recipe(path).resolved
    # unset new fields stay out of the resolved recipe: its hash (the report folder) is unchanged too
    assert "variants" not in resolved["student"]
    assert not {"score_tasks", "exclude_from_score"} & set(resolved["evaluation"])
    (v,) = student_variants(load_recipe(path))
    assert v.name is None and v.unit_id("student", 3) == "student:3" and v.job_name("control", 3) == "control-s3"


@requires_minilm
def test_variants_are_keyed_by_what_they_train(tmp_path):
    path = pipeline_recipe(tmp_path, student={"seeds": [1], "control": True, "init_from_teacher": 0},
                           teachers={"members": [{"seed": 1}]})
    plain = unit_keys(path)
    sweep = unit_keys(path, ["student.variants=[{name: base}, {name: l1, encoder: {num_layers: 1}}, "
                             "{name: l1-soft8, encoder: {num_layers: 1}, objective: {classification: {alpha: 0.8}}}, "
                             "{name: l1-scratch, encoder: {num_layers: 1}, init_from_teacher: null}]"])
    # a variant identical to the plain student is the plain student (its run folders are reused)
    assert sweep["student:base:1"] == plain["student:1"] and sweep["control:base:1"] == plain["control:1"]
    # only the soft objective differs: distinct students, one control (the same key, so one folder, one job)
    assert sweep["student:l1-soft8:1"] != sweep["student:l1:1"]
    assert sweep["control:l1-soft8:1"] == sweep["control:l1:1"] != sweep["control:base:1"]
    # what the hard-label model sees (the encoder's start) separates controls
    assert sweep["control:l1-scratch:1"] != sweep["control:l1:1"]
    recipe = load_recipe(path, ["student.variants=[{name: a}, {name: b, init_from_teacher: null, "
                                "training: {lr: 1e-4}}]"])
    a, b = student_variants(recipe)
    assert (a.init_from_teacher, b.init_from_teacher) == (0, None)  # inherited, then unset by the variant
    assert b.config["training"]["lr"] == 1e-4 and a.config["training"]["lr"] == recipe.resolved["training"]["lr"]
    assert find_variant(recipe, None) is not None and find_variant(recipe, None).name == "a"
    with pytest.raises(RecipeError, match="no student variant 'c'"):
        find_variant(recipe, "c")


@requires_minilm
def test_a_variant_merges_over_the_student_section(tmp_path):
    path = pipeline_recipe(tmp_path, student={
        "seeds": [1], "training": {"lr": 1e-4, "epochs": 2}, "encoder": {"dropout": 0.2},
        "objective": {"classification": {"type": "mixture", "alpha": 0.7}, "regression": {"type": "mixture"}},
        "variants": [{"name": "v", "training": {"epochs": 3}, "encoder": {"num_layers": 1},
                      "objective": {"classification": HIDDEN}}]})
    (v,) = student_variants(load_recipe(path))
    assert v.config["training"]["lr"] == 1e-4 and v.config["training"]["epochs"] == 3
    assert v.config["encoder"]["dropout"] == 0.2 and v.config["encoder"]["num_layers"] == 1
    # another type replaces the student's objective part whole (with the new type's defaults) ...
    assert v.objective["classification"]["type"] == "hidden-states" and v.objective["classification"]["weight"] == 1.0
    # ... the other part is the student's
    assert v.objective["regression"]["type"] == "mixture"


def _row(name, score, speed, params=100):
    return {"variant": name, "student": score, "examples_per_s": speed, "parameters": params}


def test_dominance_on_quality_and_speed_or_parameters():
    assert dominates(_row("a", 80, 10), _row("b", 79, 10), "examples_per_s")
    assert dominates(_row("a", 80, 11), _row("b", 80, 10), "examples_per_s")
    assert not dominates(_row("a", 80, 10), _row("b", 80, 10), "examples_per_s")  # a tie dominates nothing
    assert not dominates(_row("a", 80, 5), _row("b", 79, 10), "examples_per_s")  # a trade-off
    assert dominates(_row("a", 80, None, 50), _row("b", 80, None, 60), "parameters")  # fewer is cheaper
    assert not dominates(_row("a", float("nan"), 99), _row("b", 1, 1), "examples_per_s")


def _evaluation(variants: dict, speeds: dict | None) -> dict:
    """evaluation.json's parts that variant_metrics reads: per variant one seed's metrics on one task."""
    ev = {"variants": {}, "serving": {"variants": {}} if speeds else {}}
    for name, (student, control, params) in variants.items():
        ev["variants"][name] = {
            "students": [{"rte": {"accuracy": student}}], "controls": [{"rte": {"accuracy": control}}],
            "parameters": params, "train_seconds": {"students": [1.0], "controls": [1.0]},
            "comparison": {"student_vs_control": {"score": {"delta": student - control, "low": -1.0, "high": 3.0}}}}
        if speeds:
            ev["serving"]["variants"][name] = {"parameters": params, "batch_1": {"examples_per_s": 1.0},
                                               "batch_32": {"examples_per_s": speeds[name]}}
    return ev


def test_the_frontier_from_scores_and_serving_speed():
    from mtkd.scores import glue_score

    ev = _evaluation({"l6": (80.0, 78.0, 22), "l4": (79.0, 76.0, 16), "l3": (75.0, 74.0, 13),
                      "l3-hidden": (77.0, 74.0, 13), "l2": (70.0, 69.0, 10)},
                     {"l6": 100.0, "l4": 150.0, "l3": 200.0, "l3-hidden": 200.0, "l2": 290.0})
    variants, frontier = variant_metrics(ev, glue_score)
    assert frontier["axis"] == "examples_per_s" and frontier["batch_size"] == 32  # the largest batch
    on = {r["variant"]: r["pareto"] for r in frontier["variants"]}
    # l3 is as fast as l3-hidden and worse: dominated; every other variant trades quality for speed
    assert on == {"l6": True, "l4": True, "l3": False, "l3-hidden": True, "l2": True}
    row = next(r for r in frontier["variants"] if r["variant"] == "l3-hidden")
    assert row["student"] == 77.0 and row["control"] == 74.0 and row["parameters"] == 13
    assert row["student_minus_control"] == {"delta": 3.0, "low": -1.0, "high": 3.0}
    assert variants["l4"]["tasks"]["rte"]["student"] == {"accuracy": 79.0}
    # without serving figures the cost is the parameter count
    _, frontier = variant_metrics(_evaluation({"a": (80.0, 70.0, 20), "b": (80.0, 70.0, 10)}, None), glue_score)
    assert frontier["axis"] == "parameters"
    assert [r["pareto"] for r in frontier["variants"]] == [False, True]


def test_a_tiny_compression_sweep_end_to_end(mtkd_run_recipe, mtkd_plugins):
    """Two sizes and the hidden-state objective on the smaller one, 1 seed, a few steps: every variant with its
    control (two controls, the hidden variant shares the small one's), the frontier in metrics.json, the
    report, the terminal table and the plot; models addressed as student:VARIANT / control:VARIANT."""
    sample = {"max_train_examples": 24, "max_eval_examples": 16}
    run = mtkd_run_recipe({
        "tasks": [{"name": "rte", **sample}, {"name": "sst2", **sample}],
        "student": {"seeds": [1], "control": True, "variants": [
            {"name": "l2"},
            {"name": "l1", "encoder": {"num_layers": 1}, "init_from_teacher": 0},
            {"name": "l1-hidden", "encoder": {"num_layers": 1}, "init_from_teacher": 0,
             "objective": {"classification": HIDDEN}}]},
        "evaluation": {"serving": True, "serving_examples": 8, "serving_batch_sizes": [4],
                       "exclude_from_score": ["sst2"]}})
    path, run_dir, result = run.recipe, run.run_dir, run
    assert len(list((run_dir / "students").glob("*/result.json"))) == 3
    assert len(list((run_dir / "controls").glob("*/result.json"))) == 2  # l1-hidden's control is l1's
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["score_tasks"] == ["rte"]
    rows = {r["variant"]: r for r in m["frontier"]["variants"]}
    assert list(rows) == ["l2", "l1", "l1-hidden"] and m["frontier"]["axis"] == "examples_per_s"
    assert rows["l1"]["parameters"] == rows["l1-hidden"]["parameters"] < rows["l2"]["parameters"]
    # one serving benchmark per architecture: l1-hidden is l1's model shape, so it has l1's cost
    assert rows["l1"]["examples_per_s"] == rows["l1-hidden"]["examples_per_s"] != rows["l2"]["examples_per_s"]
    for r in rows.values():
        assert r["examples_per_s"] > 0 and r["batch_size"] == 4
        d = r["student_minus_control"]
        assert d["low"] <= d["delta"] <= d["high"]
        # the headline averages rte only: a variant's score is its rte score
        assert r["student"] == pytest.approx(m["variants"][r["variant"]]["tasks"]["rte"]["student"]["accuracy"])
    assert rows["l1"]["control"] == rows["l1-hidden"]["control"]  # one control model
    assert [r["control_of"] for r in rows.values()] == ["l2", "l1", "l1"]
    fastest_best = max(rows.values(), key=lambda r: (r["student"], r["examples_per_s"]))
    assert fastest_best["pareto"]  # nothing beats the best score at its speed
    # the first variant is the run's student
    assert m["score"]["student"] == rows["l2"]["student"]
    assert m["comparison"]["method"]["score_tasks"] == ["rte"]
    # every variant's calibration change against its own control (the first's is the run's, less the ensemble)
    for name, v in m["variants"].items():
        pairs = {"student_vs_control"} | ({"student_vs_variant"} if name == "l1-hidden" else set())
        assert set(v["comparison"]["calibration_deltas"]) == pairs, name
        for p in pairs:
            assert set(v["comparison"]["calibration_deltas"][p]) == {"rte", "sst2"}
    # the objective's own effect: l1-hidden's students against l1's (the variant whose control it shares)
    vs = m["variants"]["l1-hidden"]["comparison"]["student_vs_variant"]
    assert vs["variant"] == "l1" and vs["seeds"] == [1]
    assert vs["score"]["delta"] == pytest.approx(rows["l1-hidden"]["student"] - rows["l1"]["student"])
    assert rows["l1-hidden"]["student_minus_variant"] == {"variant": "l1", **{k: vs["score"][k] for k in
                                                                              ("delta", "low", "high")}}
    assert rows["l2"]["student_minus_variant"] is None and rows["l1"]["student_minus_variant"] is None
    assert "student_vs_variant" not in m["variants"]["l1"]["comparison"]
    assert m["variants"]["l2"]["comparison"]["calibration_deltas"]["student_vs_control"] == \
        m["comparison"]["calibration_deltas"]["student_vs_control"]
    report = (run_dir / "report.md").read_text()
    assert "The GLUE-style score averages rte; sst2 is reported but not averaged." in report
    assert "## Compression frontier" in report and "| l1-hidden | " in report
    assert "| student l1 |" in report  # the serving table has every variant
    frontier_md = report.split("## Compression frontier")[1]
    assert "(l1's)" in frontier_md  # l1-hidden's control is said to be l1's
    hidden_row = next(line for line in frontier_md.splitlines() if line.startswith("| l1-hidden | "))
    assert f"{vs['score']['delta']:+.2f} [{vs['score']['low']:+.2f}, {vs['score']['high']:+.2f}] (l1's)" in hidden_row
    assert "| task | l2 − control | l1 − control | l1-hidden − control | l1-hidden − l1 |" in frontier_md
    out = " ".join(result.output.split())
    assert "compression frontier" in out and "l1-hidden" in out
    assert "quality_vs_cost.png" in m["plots"]
    with Image.open(run_dir / "quality_vs_cost.png") as img:
        img.verify()
    # addressing: student:VARIANT and control:VARIANT; plain `student` is the first variant
    def rte(role):
        r = mtkd_plugins.cli("evaluate", path, "--model", role, "--json", "--task", "rte")
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["rte"]["accuracy"]

    v = m["variants"]
    assert rte("student") == pytest.approx(v["l2"]["tasks"]["rte"]["student"]["accuracy"])
    assert rte("student:l1-hidden") == pytest.approx(v["l1-hidden"]["tasks"]["rte"]["student"]["accuracy"])
    assert rte("control:l1-hidden") == pytest.approx(v["l1"]["tasks"]["rte"]["control"]["accuracy"])
    r = mtkd_plugins.cli("runs", "compare", run_dir, run_dir, "--model", "control:l1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["scores"]["GLUE-style"] == [rows["l1"]["control"]] * 2
    assert mtkd_plugins.cli("runs", "compare", run_dir, run_dir, "--model", "student:l9").exit_code == 2
    exported = run_dir.parent / "l1-hidden-rte"
    r = mtkd_plugins.cli("export", path, exported, "--task", "rte", "--model", "student:l1-hidden")
    assert r.exit_code == 0, r.output
    assert json.loads((exported / "config.json").read_text())["num_hidden_layers"] == 1
    # a second run trains nothing: every unit is reused
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("*s/*/result.json")}
    assert mtkd_plugins.cli("recipe", "run", path, "--quiet").exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("*s/*/result.json")} == before
    assert not math.isnan(m["score"]["control"])


def test_the_shipped_compression_sweep():
    from helpers import REPO

    recipe = load_recipe(REPO / "recipes" / "compression-sweep.yaml")
    variants = student_variants(recipe)
    assert [v.name for v in variants] == ["l6", "l3", "l3-hidden", "l2", "l2-hidden"]
    # compressed students start from teacher 0's lower layers; the 6-layer one from the pretrained encoder, as
    # A's student (teacher 0's lower 6 layers are teacher 0), so it shares A's units
    assert [v.init_from_teacher for v in variants] == [None, 0, 0, 0, 0]
    plain = load_recipe(REPO / "recipes" / "minilm-glue-kd.yaml")
    assert variants[0].config == student_variants(plain)[0].config
    assert [v.config["encoder"].get("num_layers") for v in variants] == [None, 3, 3, 2, 2]
    for v in variants:
        objective = v.objective["classification"]
        assert objective["type"] == ("hidden-states" if v.name.endswith("-hidden") else "mixture")
        if v.name.endswith("-hidden"):  # every student layer paired, up to the teacher's last (6)
            assert objective["layers"][-1][1] == 6 and objective["base"]["type"] == "mixture"
    assert recipe.score_tasks() == ["cola", "sst2", "rte"]  # WNLI reported, left out of the headline


def test_the_plots_show_every_variant_and_the_frontier(tmp_path):
    from mtkd.plots import cost_points, plot_deltas, plot_scores, plot_serving_cost, score_groups
    from mtkd.scores import glue_score

    ev = _evaluation({"l6": (80.0, 78.0, 22), "l3": (77.0, 74.0, 13), "l2": (70.0, 71.0, 10)},
                     {"l6": 100.0, "l3": 200.0, "l2": 290.0})
    ev["variants"]["l2"]["control_of"] = "l3"  # as if l2 differed from l3 only in its soft objective
    variants, frontier = variant_metrics(ev, glue_score)
    metrics = {"teacher_names": ["t"], "tasks": {"rte": {"teachers": [{"accuracy": 81.0}], "ensemble": {"accuracy": 82.0},
                                                         "students": [{"accuracy": 80.0}], "controls": [{"accuracy": 78.0}]}},
               "score": {"teachers": [81.0], "ensemble": 82.0, "student": 80.0, "control": 78.0, "students": [80.0],
                         "controls": [78.0]},
               "serving": {"ensemble": {"parameters": 66, "members": 3, "batch_32": {"examples_per_s": 33.0}},
                           "student": ev["serving"]["variants"]["l6"]},
               "variants": variants, "frontier": frontier}
    points = {p["name"]: p for p in cost_points(metrics)}
    # every variant's student and control, a shared control once (the plain student is l6, not drawn twice); a
    # teacher's cost is not measured
    assert set(points) == {"ensemble", "student:l6", "student:l3", "student:l2", "control:l6", "control:l3 (= l2)"}
    assert points["control:l3 (= l2)"]["examples_per_s"] == points["student:l3"]["examples_per_s"] == 200.0
    labels = [b[0] for b in score_groups(metrics)["GLUE-style"]]
    assert labels == ["t", "ensemble", "control l6", "student l6", "control l3", "student l3", "student l2"]
    drawn = [*plot_serving_cost(metrics, tmp_path), *plot_scores(metrics, tmp_path), *plot_deltas(metrics, tmp_path)]
    assert [p.name for p in drawn] == ["quality_vs_cost.png", "scores.png", "deltas.png"]  # deltas: per variant
    for path in drawn:
        with Image.open(path) as img:
            img.verify()


def test_the_report_renders_a_sweep_without_controls_or_serving():
    from mtkd.report import render_markdown
    from mtkd.scores import glue_score

    ev = _evaluation({"l6": (80.0, 0.0, 22_000_000), "l3": (77.0, 0.0, 13_000_000)}, None)
    for v in ev["variants"].values():
        v["controls"], v["comparison"] = [], {}
    variants, frontier = variant_metrics(ev, glue_score)
    metrics = {"teacher_names": [], "tasks": {"rte": {"teachers": [], "student": {"accuracy": 80.0},
                                                      "students": [{"accuracy": 80.0}]}},
               "score": {"student": 80.0, "students": [80.0]}, "score_tasks": ["rte"],
               "variants": variants, "frontier": frontier}
    text = render_markdown(metrics, "sweep", "abc")
    assert "cost: the parameter count" in text
    assert "| l6 | 22.00 M | — | 80.00 | — | — | — | yes |" in text  # better: on the frontier despite its size
    assert "| l3 | 13.00 M | — | 77.00 | — | — | — | yes |" in text  # smaller: on it too
    assert "| task | l6 student | l3 student |" in text
