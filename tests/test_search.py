"""The training-budget search (student.search): one grid for student and control, chosen on the holdout (never
dev), fresh confirmation seeds, cached like every other stage, and clean errors for a bad search."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers import TINY_ENCODER, pipeline_recipe, requires_minilm, run_cli, synthetic_sentiment

from mtkd.errors import RecipeError
from mtkd.recipe import load_recipe

HOLDOUT = {"serving": False, "selection": {"holdout": 0.25}}


def recipe_with(tmp_path: Path, search: dict | None, *, evaluation=HOLDOUT, seeds=(1,), **changes) -> Path:
    student = {"seeds": list(seeds), "control": True}
    if search is not None:
        student["search"] = search
    return pipeline_recipe(tmp_path, evaluation=evaluation, student=student, **changes)


# ---------------------------------------------------------------- the recipe field


def test_the_grid_is_coerced_by_the_training_schema(tmp_path):
    """YAML 1.1 reads `3e-5` as text: the search's values reach the resolved recipe as numbers."""
    path = recipe_with(tmp_path, {"epochs": [2, 3], "lr": ["3e-5", 1.0e-4], "seeds": [101]})
    assert yaml.safe_load(path.read_text())["student"]["search"]["lr"][0] == "3e-5"
    search = load_recipe(path).resolved["student"]["search"]
    assert search == {"epochs": [2.0, 3.0], "lr": [3e-5, 1e-4], "seeds": [101]}
    assert all(isinstance(v, float) for v in search["lr"])
    # no search: the key stays out of the resolved recipe (earlier runs' hashes hold)
    assert "search" not in load_recipe(recipe_with(tmp_path, None)).resolved["student"]


@pytest.mark.parametrize("search, path, words", [
    ({"lrr": [1e-4], "seeds": [101]}, "student.search.lrr", "did you mean 'lr'"),
    ({"sampling": [{"type": "proportional"}], "seeds": [101]}, "student.search.sampling", "not a single value"),
    ({"best_tasks": [["rte"]], "seeds": [101]}, "student.search.best_tasks", "not a single value"),
    ({"num_threads": [1, 2], "seeds": [101]}, "student.search.num_threads", "cannot change the trained model"),
    ({"lr": 1e-4, "seeds": [101]}, "student.search.lr", "takes a list"),
    ({"lr": [], "seeds": [101]}, "student.search.lr", "takes a list"),
    ({"lr": [1e-4, -1], "seeds": [101]}, "student.search.lr[1]", "not a valid training.lr"),
    ({"optimizer": ["adamw", "sgd"], "seeds": [101]}, "student.search.optimizer[1]", "not a valid training.optimizer"),
    ({"lr": [1e-4, "1e-4"], "seeds": [101]}, "student.search.lr[1]", "listed twice"),
    ({"seeds": [101]}, "student.search", "at least one training field"),
    ({"lr": [1e-4], "seeds": [101, 1]}, "student.search.seeds[1]", "also a confirmation seed"),
    ({"lr": [1e-4], "seeds": [5, 5]}, "student.search.seeds[1]", "listed twice"),
    ({"lr": [1e-4]}, "student.search.seeds", "missing"),
])
def test_a_bad_search_is_a_clean_error(tmp_path, search, path, words):
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_with(tmp_path, search))
    assert exc.value.path == path
    assert words in str(exc.value), str(exc.value)


def test_a_search_chosen_on_dev_is_refused_with_what_to_set(tmp_path):
    path = recipe_with(tmp_path, {"lr": [1e-4, 3e-4], "seeds": [101]}, evaluation={"serving": False})
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert exc.value.path == "evaluation.selection" and "holdout" in exc.value.hint
    result = run_cli("recipe", "validate", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "evaluation.selection" in result.output and "must not choose on dev" in result.output


def test_validate_notes_the_search_cost_and_a_student_trained_less_than_its_teachers(tmp_path):
    path = recipe_with(tmp_path, {"epochs": [1, 2], "lr": [1e-4, 3e-4], "seeds": [101, 102]}, seeds=(1, 2, 3),
                       teachers={"members": [{"seed": 1, "training": {"epochs": 3}}, {"seed": 2}]})
    out = " ".join(run_cli("recipe", "validate", path).output.split())
    assert "note: search: 4 setting(s) × 2 trial seed(s) for each student and control set-up = 16 trial job(s), " \
           "then 6 confirmation job(s)" in out
    assert "the student and control train at most 2 epochs, fewer than teacher teacher-0 (3)" in out
    reach = " ".join(run_cli("recipe", "validate", path, "--set", "student.search.epochs=[2, 3]").output.split())
    assert "search: 4 setting(s)" in reach and "fewer than teacher" not in reach


def test_trial_seeds_default_confirmation_seed_is_the_recipe_seed(tmp_path):
    """Without student.seeds the confirmation seed is the recipe's seed: a trial may not take it."""
    path = pipeline_recipe(tmp_path, evaluation=HOLDOUT, student={"search": {"lr": [1e-4], "seeds": [42]}})
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert exc.value.path == "student.search.seeds[0]"


def test_the_search_in_the_keys(tmp_path):
    """Trials are keyed like the role's units with the setting and trial seed; both roles share grid and seeds;
    a grid change gives new trials only where the setting is new."""
    from mtkd.progress import NullProgress
    from mtkd.stages.context import RunContext, load_tasks
    from mtkd.stages.graph import plan_all, unit_key
    from mtkd.stages.store import RunStore

    def trials(search):
        recipe = load_recipe(recipe_with(tmp_path, search))
        ctx = RunContext(recipe, RunStore(tmp_path / "unused"), load_tasks(recipe), NullProgress())
        planned = plan_all(ctx)
        digests = {}
        for stage in ("teachers", "logits", "soft-targets"):
            for u in planned[stage]:
                digests[u.id] = unit_key(u, digests)
        return {stage: {u.id: (u.search["setting"], u.fields["seed"], unit_key(u, digests)) for u in planned[stage]}
                for stage in ("student-search", "control-search")}, planned

    two, planned = trials({"epochs": [1, 2], "lr": [1e-4], "seeds": [101, 102]})
    student, control = two["student-search"], two["control-search"]
    assert [(s, seed) for s, seed, _ in student.values()] == [(s, seed) for s, seed, _ in control.values()] == [
        ({"epochs": 1.0, "lr": 1e-4}, 101), ({"epochs": 1.0, "lr": 1e-4}, 102),
        ({"epochs": 2.0, "lr": 1e-4}, 101), ({"epochs": 2.0, "lr": 1e-4}, 102)]
    assert len({k for *_, k in student.values()} | {k for *_, k in control.values()}) == 8
    # the confirmations wait for their role's trials, and the evaluation reports every trial
    (confirm,) = planned["student"]
    assert confirm.search["trials"] == list(student)
    assert set(student) | set(control) <= set(planned["evaluate"][0].deps)
    three, _ = trials({"epochs": [1, 2, 3], "lr": [1e-4], "seeds": [101, 102]})
    old = {k for *_, k in student.values()}
    new = {k for *_, k in three["student-search"].values()}
    assert old < new and len(new - old) == 2


def test_without_a_control_only_the_student_searches(tmp_path):
    from mtkd.progress import NullProgress
    from mtkd.stages.context import RunContext, load_tasks
    from mtkd.stages.graph import plan_all

    path = pipeline_recipe(tmp_path, evaluation=HOLDOUT,
                           student={"seeds": [1], "control": False, "search": {"lr": [1e-4, 3e-4], "seeds": [7]}})
    recipe = load_recipe(path)
    planned = plan_all(RunContext(recipe, None, load_tasks(recipe), NullProgress()))
    assert [u.id for u in planned["student-search"]] == ["student-trial:0:7", "student-trial:1:7"]
    assert planned["control-search"] == [] and planned["control"] == []


def test_each_student_variant_searches_its_own_set_up(tmp_path):
    """With student.variants every variant (and its control) gets the whole grid over its own set-up."""
    from mtkd.progress import NullProgress
    from mtkd.stages.context import RunContext, load_tasks
    from mtkd.stages.graph import plan_all

    path = pipeline_recipe(tmp_path, evaluation=HOLDOUT, student={
        "seeds": [1], "control": True, "search": {"lr": [1e-4, 3e-4], "seeds": [7]},
        "variants": [{"name": "wide"}, {"name": "thin", "encoder": {"num_layers": 1}}]})
    recipe = load_recipe(path)
    planned = plan_all(RunContext(recipe, None, load_tasks(recipe), NullProgress()))
    trials = {u.id: u for u in planned["student-search"]}
    assert list(trials) == ["student:wide-trial:0:7", "student:wide-trial:1:7", "student:thin-trial:0:7",
                            "student:thin-trial:1:7"]
    thin = trials["student:thin-trial:1:7"]
    variant, seed = thin.data
    assert variant.name == "thin" and seed == 7 and thin.fields["seed"] == 7
    assert thin.fields["config"]["encoder"]["num_layers"] == 1 and thin.fields["config"]["training"]["lr"] == 3e-4
    assert thin.label == "student thin trial 1 (lr=0.0003) seed 7"
    confirm = {u.id: u for u in planned["student"]}["student:thin:1"]
    assert confirm.search["trials"] == ["student:thin-trial:0:7", "student:thin-trial:1:7"]
    assert len(planned["control-search"]) == 4


def test_the_report_lists_every_setting_and_the_budget_warning():
    from mtkd.report import search_lines

    trials = [{"setting": {"epochs": 2.0, "lr": 5e-5}, "seeds": [101, 102], "scores": [60.0, 62.0], "score": 61.0,
               "chosen": False},
              {"setting": {"epochs": 3.0, "lr": 5e-5}, "seeds": [101, 102], "scores": [63.0, 61.0], "score": 62.0,
               "chosen": True}]
    metrics = {"search": {"fields": ["epochs", "lr"], "trial_seeds": [101, 102], "confirmation_seeds": [1, 2, 3],
                          "settings": 2, "roles": {"student": {"split": "holdout", "trials": trials,
                                                               "chosen": {"epochs": 3.0, "lr": 5e-5}}}},
               "budget": {"examples": 100, "teachers": {"t1": 3.0}, "student": 2.0, "warnings": ["the student ..."]}}
    text = "\n".join(search_lines(metrics))
    assert "The student tried the same 2 training setting(s) (epochs, lr) with the same trial seeds (101, 102)" in text
    assert "| epochs=2, lr=5e-05 | 61.00 (60.00, 62.00) |" in text
    assert "| epochs=3, lr=5e-05 | **62.00 (63.00, 61.00) chosen** |" in text
    assert "fresh confirmation seeds (1, 2, 3) on dev" in text
    assert "teachers t1 3; student 2." in text and "**Warning**: the student ...." in text


# ---------------------------------------------------------------- end to end, tiny models


def flipped(src: Path, dest: Path) -> Path:
    """The same rows with the other label: a dev set on which a model scores 100 minus its training accuracy."""
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["label"] = "negative" if r["label"] == "positive" else "positive"
    with open(dest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["sentence", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return dest


def job_times(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.glob("*/*/result.json")}


def peak_lr(job_dir: Path) -> float:
    """The highest learning rate a job logged (the schedule's peak, after warm-up)."""
    rows = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    return max(r["train/lr"] for r in rows if "train/lr" in r)


def recorded_trials(run_dir: Path, folder: str) -> dict[tuple, list[float]]:
    """Setting -> the selection scores the trials wrote (their result.json), read back from the run folder."""
    from mtkd.scores import glue_score

    out: dict[tuple, list[float]] = {}
    for marker in sorted((run_dir / folder).glob("*/mtkd-stage.json")):
        setting = json.loads(marker.read_text())["info"]["setting"]
        result = json.loads((marker.parent / "result.json").read_text())
        out.setdefault(tuple(sorted(setting.items())), []).append(glue_score(result["metrics"]))
    return out


@requires_minilm
def test_search_end_to_end_chooses_on_the_holdout_caches_and_retrains_only_what_changed(tmp_path):
    train = synthetic_sentiment(tmp_path / "train.csv", 96, seed=0)
    task = {"name": "senti", "type": "table", "text_columns": ["sentence"], "train": str(train),
            # dev = the training rows with the other label: it would choose the setting that learned least
            "validation": str(flipped(train, tmp_path / "dev.csv"))}
    search = {"lr": [1.0e-6, 1.0e-3], "seeds": [101, 102]}
    # mean pooling: the tiny random encoder then learns the sentiment words at 1e-3 in 36 steps
    setup = {"tasks": [task], "encoder": {**TINY_ENCODER, "pooling": "mean"},
             "teachers": {"members": [{"seed": 1, "training": {"epochs": 5, "lr": 1.0e-3}}]},
             "training": {"epochs": 4, "batch_size": 8, "eval_batch_size": 32, "log_every": 1, "num_threads": 1}}
    recipe = recipe_with(tmp_path, search, **setup)
    result = run_cli("recipe", "run", recipe)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    search_block = metrics["search"]
    assert set(search_block["roles"]) == {"student", "control"}
    for role, folder in (("student", "students-search"), ("control", "controls-search")):
        table = search_block["roles"][role]
        recorded = recorded_trials(run_dir, folder)
        # the same grid and trial seeds for both roles
        assert [t["setting"] for t in table["trials"]] == [{"lr": 1e-6}, {"lr": 1e-3}]
        assert all(t["seeds"] == [101, 102] for t in table["trials"])
        for t in table["trials"]:
            assert sorted(t["scores"]) == sorted(recorded[tuple(t["setting"].items())])
        means = {k: sum(v) / len(v) for k, v in recorded.items()}
        best = max(means, key=means.get)
        assert table["chosen"] == dict(best) == {"lr": 1e-3}, (role, means)
        assert means[best] > min(means.values()) + 10  # the high rate learned; the choice was not a tie
        assert not list((run_dir / folder).glob("*/best")) and not list((run_dir / folder).glob("*/final"))
        # dev disagrees: the chosen set-up scores below chance there, so dev would have chosen the other one
        dev = metrics["score"][role]
        assert dev < 50 < means[best], (role, dev, means)
        # the confirmation trained with the chosen setting and a seed that no trial used
        (confirm,) = (run_dir / f"{folder.split('-')[0]}").glob("*/result.json")
        assert json.loads(confirm.read_text())["job"] == f"{role}-s1"
        # its holdout score is recorded beside the trials' (what dev is then set against)
        (held,) = table["confirmations"]
        assert held["seed"] == 1 and held["score"] == json.loads(confirm.read_text())["best"] > 50
        assert 1e-3 / 2 < peak_lr(confirm.parent) <= 1e-3 * 1.0001
    report = (run_dir / "report.md").read_text()
    assert "## Training-budget search (chosen on the holdout)" in report
    assert "lr=0.001 | **" in report and "confirmation seeds (1) on dev" in report
    assert "The confirmation seeds on the holdout" in report
    assert f"student {search_block['roles']['student']['confirmations'][0]['score']:.2f} (mean" in report
    assert "search: student chose lr=0.001" in " ".join(result.output.split())
    # a teacher trained 5 epochs, student and control 4: said in the report and on the terminal
    assert metrics["budget"]["teachers"] == {"teacher-0": 5.0} and metrics["budget"]["student"] == 4.0
    assert len(metrics["budget"]["warnings"]) == 2 and "**Warning**: the student trains 4 epochs" in report
    assert "warning: the control trains 4 epochs" in " ".join(result.output.split())

    before = job_times(run_dir)
    again = run_cli("recipe", "run", recipe, "--quiet")
    assert again.exit_code == 0, again.output
    assert job_times(run_dir) == before  # nothing trained

    # a trial left unfinished (no marker, no result): only it trains, in its own folder; it scores as before
    # (deterministic on CPU), so the choice holds and no confirmation retrains
    trial = sorted((run_dir / "controls-search").glob("*/mtkd-stage.json"))[0].parent
    for name in ("mtkd-stage.json", "result.json"):
        (trial / name).unlink()
    redo = run_cli("recipe", "run", recipe)
    assert redo.exit_code == 0, redo.output
    assert "control-search: 3 cached" in " ".join(redo.output.split()), redo.output
    after = job_times(run_dir)
    assert (trial / "result.json").is_file() and (trial / "mtkd-stage.json").is_file()
    assert {k: v for k, v in after.items() if trial.name not in k} == {
        k: v for k, v in before.items() if trial.name not in k}
    before = after

    # one more setting, which learns nothing: only its trials train; the choice and the confirmations hold
    bigger = recipe_with(tmp_path, {**search, "lr": [1.0e-6, 1.0e-3, 1.0e-7]}, **setup)
    third = run_cli("recipe", "run", bigger, "--quiet")
    assert third.exit_code == 0, third.output
    after = job_times(run_dir)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(k.split("/")[0] for k in set(after) - set(before)) == ["controls-search"] * 2 + [
        "students-search"] * 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [t["setting"]["lr"] for t in metrics["search"]["roles"]["student"]["trials"]] == [1e-6, 1e-3, 1e-7]

    # the winner leaves the grid: no trial trains (all were tried before), the choice moves, so the
    # confirmations retrain with it
    smaller = recipe_with(tmp_path, {**search, "lr": [1.0e-6, 1.0e-7]}, **setup)
    fourth = run_cli("recipe", "run", smaller, "--quiet")
    assert fourth.exit_code == 0, fourth.output
    last = job_times(run_dir)
    new = sorted(k.split("/")[0] for k in set(last) - set(after))
    assert new == ["controls", "students"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for role, folder in (("student", "students"), ("control", "controls")):
        assert metrics["search"]["roles"][role]["chosen"]["lr"] in (1e-6, 1e-7)
        (confirm,) = [run_dir / k for k in set(last) - set(after) if k.startswith(folder + "/")]
        chosen = metrics["search"]["roles"][role]["chosen"]["lr"]
        assert chosen / 2 < peak_lr(confirm.parent) <= chosen * 1.0001  # trained at the new choice


@requires_minilm
def test_the_reproduction_recipe_runs_its_search_with_a_tiny_encoder(tmp_path):
    """minilm-glue-kd-strong (extending minilm-glue-kd) as shipped, with a tiny encoder and the GLUE sample swapped
    in: the holdout chooses, both roles try the same 4 settings, 3 fresh confirmation seeds each."""
    from helpers import GLUE_SAMPLE, MINILM_ID, REPO, TINY_CONFIG

    recipe = REPO / "recipes" / "minilm-glue-kd-strong.yaml"
    shipped = load_recipe(recipe).resolved
    assert shipped["evaluation"]["selection"] == {"holdout": 0.1}
    assert shipped["tasks"][0]["name"] == "cola" and shipped["tasks"][0]["max_train_examples"] is None
    search = shipped["student"]["search"]
    assert len(shipped["student"]["seeds"]) >= 3 and not set(search["seeds"]) & set(shipped["student"]["seeds"])
    tasks = [{"name": "cola", "max_train_examples": 16, "max_eval_examples": 16},
             {"name": "rte", "max_train_examples": 16, "max_eval_examples": 16}]
    sets = [f"encoder.model={MINILM_ID}", "encoder.pretrained=false", f"encoder.config_overrides={json.dumps(TINY_CONFIG)}",
            "teachers.members[1].heads={rte: {type: san}}", f"data.glue={GLUE_SAMPLE}", "data.max_length=32",
            f"data.cache_dir={tmp_path / 'cache'}", f"tasks={json.dumps(tasks)}", "training.batch_size=8",
            "training.precision=fp32", "training.num_threads=1", "evaluation.serving=false",
            "evaluation.exclude_from_score=null"]  # WNLI (left out of the headline) is not in the sample
    args = [a for s in sets for a in ("--set", s)]
    result = run_cli("recipe", "run", recipe, *args, "--output", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    grid = [{"epochs": e, "lr": lr} for e in search["epochs"] for lr in search["lr"]]
    for role in ("student", "control"):
        table = metrics["search"]["roles"][role]
        assert [t["setting"] for t in table["trials"]] == grid and table["chosen"] in grid
    assert metrics["seeds"] == shipped["student"]["seeds"] and metrics["selection"]["split"] == "holdout"
    # the teachers train 3 epochs: a student or control that chose 2 is flagged
    budget = metrics["budget"]
    flagged = {w.split()[1] for w in budget["warnings"]}
    assert flagged == {r for r in ("student", "control") if budget[r] < 3}


@requires_minilm
def test_variants_sharing_a_control_share_its_trials(tmp_path):
    """Two variants that differ only in the soft objective share one control: its trials run once, and both
    variants' controls take the same choice."""
    mixture = {"type": "mixture", "alpha": 0.8, "hard": {"type": "ce"}, "soft": {"type": "soft-ce"}}
    recipe = pipeline_recipe(tmp_path, evaluation=HOLDOUT, teachers={"members": [{"seed": 1}]}, student={
        "seeds": [1], "control": True, "search": {"lr": [1e-4, 3e-4], "seeds": [101]},
        "variants": [{"name": "a"}, {"name": "b", "objective": {"classification": mixture}}]})
    result = run_cli("recipe", "run", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    counts = {f: len(list((run_dir / f).glob("*/result.json")))
              for f in ("students-search", "students", "controls-search", "controls")}
    assert counts == {"students-search": 4, "students": 2, "controls-search": 2, "controls": 1}
    roles = json.loads((run_dir / "metrics.json").read_text())["search"]["roles"]
    assert set(roles) == {"student:a", "student:b", "control:a", "control:b"}
    assert roles["control:a"] == roles["control:b"]
    # each variant's own confirmation: one each, from the students' own jobs
    assert [len(roles[r]["confirmations"]) for r in sorted(roles)] == [1, 1, 1, 1]
    kept = sorted(json.loads(p.read_text())["best"] for p in (run_dir / "students").glob("*/result.json"))
    assert sorted(roles[r]["confirmations"][0]["score"] for r in ("student:a", "student:b")) == kept
    (control,) = (run_dir / "controls").glob("*/result.json")
    assert roles["control:a"]["confirmations"][0]["score"] == json.loads(control.read_text())["best"]


@requires_minilm
def test_a_trial_stopped_mid_training_resumes_from_its_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from helpers import mtkd_env

    recipe = recipe_with(tmp_path, {"lr": [1e-4], "seeds": [101]}, teachers={"members": [{"seed": 1}]},
                         tasks=[{"name": "rte", "max_train_examples": 32, "max_eval_examples": 16},
                                {"name": "sst2", "max_train_examples": 32, "max_eval_examples": 16}],
                         training={"epochs": 3, "batch_size": 8, "eval_batch_size": 16, "log_every": 1,
                                   "save_every": 3, "num_threads": 1})
    assert run_cli("recipe", "run", recipe, "--stage", "teachers", "-q").exit_code == 0
    trials = tmp_path / "runs" / "tiny" / "controls-search"

    def checkpoint_step() -> int:
        for state in trials.glob("*/checkpoint/trainer_state.json") if trials.exists() else ():
            try:
                return json.loads(state.read_text())["step"]
            except (OSError, ValueError, KeyError):
                return -1
        return -1

    cmd = [sys.executable, "-m", "mtkd", "recipe", "run", str(recipe), "--stage", "control-search", "-q"]
    proc = subprocess.Popen(cmd, env=mtkd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while checkpoint_step() < 3:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    stopped_at = checkpoint_step()
    (trial,) = [p for p in trials.iterdir() if p.is_dir()]
    assert not (trial / "mtkd-stage.json").exists()

    done = run_cli("recipe", "run", recipe, "--stage", "control-search")
    assert done.exit_code == 0, done.output
    assert f"resuming control-s101-trial0 from step {stopped_at}" in " ".join(done.output.split())
    result = json.loads((trial / "result.json").read_text())
    rows = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if "train/loss" in r]
    assert stopped_at < result["steps"] and logged == list(range(1, result["steps"] + 1))  # resumed, not restarted
    assert (trial / "mtkd-stage.json").is_file() and not (trial / "checkpoint").exists()
    assert not (trial / "best").exists() and not (trial / "final").exists()
