"""The recipes shipped in recipes/ validate, and the paper's GPU recipe runs end to end once a tiny encoder,
the GLUE sample and a CPU set-up are substituted through ``--set``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import GLUE_SAMPLE, MINILM_ID, REPO, TINY_CONFIG, requires_minilm, run_cli

RECIPES = REPO / "recipes"
#: base.yaml is a fragment that the others extend (no name, no tasks): it is not a recipe on its own.
SHIPPED = sorted(p.name for p in RECIPES.glob("*.yaml") if p.name != "base.yaml")


def test_the_shipped_recipes_are_found():
    assert {"quickstart.yaml", "minilm-glue-kd.yaml", "minilm-glue-kd-strong.yaml", "mtdnn-kd-glue.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_validates(name):
    from mtkd.recipe import load_recipe

    # The CPU-scale recipes read the real GLUE data in ../shared/data, which a clone elsewhere lacks (validation
    # then rightly refuses the missing folder): there, everything else is validated against the hub id instead.
    glue = load_recipe(RECIPES / name).resolved["data"].get("glue")
    sets = []
    if glue and "shared/data" in str(glue) and not Path(glue).exists() and not (RECIPES / glue).exists():
        sets = ["--set", "data.glue=nyu-mll/glue"]
    result = run_cli("recipe", "validate", RECIPES / name, *sets)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_base_is_a_fragment_not_a_recipe():
    result = run_cli("recipe", "validate", RECIPES / "base.yaml")
    assert result.exit_code == 2
    assert "name" in result.output and "missing required key" in result.output


def test_quickstart_resolves_to_the_minilm_hub_id_and_the_sample():
    from mtkd.recipe import load_recipe

    recipe = load_recipe(RECIPES / "quickstart.yaml")
    assert recipe.resolved["encoder"]["model"] == MINILM_ID
    assert recipe.resolved["encoder"]["pretrained"] is True
    sample = Path(recipe.resolve_path(recipe.resolved["data"]["glue"])).resolve()
    assert sample == (RECIPES / "data" / "sst2-2k").resolve()
    assert [t["name"] for t in recipe.resolved["tasks"]] == ["sst2"]
    # the data the quickstart needs ships with it (the whole dev split: its interval is computed over it)
    assert sum(1 for _ in (sample / "SST-2" / "dev.tsv").open()) == 873
    assert sum(1 for _ in (sample / "SST-2" / "train.tsv").open()) == 2001


def _tiny_mtdnn_overrides(tmp_path: Path) -> list[str]:
    """The paper's recipe on CPU in seconds: what the GPU set-up needs is replaced, the method is kept."""
    tiny = json.dumps(TINY_CONFIG)  # JSON is YAML
    tasks = [{"name": "cola", "max_train_examples": 16, "max_eval_examples": 16},
             {"name": "rte", "max_train_examples": 16, "max_eval_examples": 16}]
    sets = [
        f"encoder.model={MINILM_ID}", "encoder.pretrained=false", f"encoder.config_overrides={tiny}",
        # member 3 swaps in bert-large-uncased: the same substitution keeps it a member with its own encoder
        f"teachers.members[2].encoder.model={MINILM_ID}",
        # SAN heads for the four distilled tasks, of which only RTE is left
        "teachers.members[1].heads={rte: {type: san}}",
        "heads={default: {type: linear, dropout: 0.1}, cola: {type: linear, dropout: 0.05}}",
        f"data.glue={GLUE_SAMPLE}", "data.max_length=32", f"data.cache_dir={tmp_path / 'cache'}",
        f"tasks={json.dumps(tasks)}", "teachers.tasks=[rte]",
        "evaluation.exclude_from_score=null",  # WNLI, left out of the headline, is not among the tasks left
        "training.max_steps=2", "training.batch_size=8", "training.precision=fp32", "training.num_threads=1",
        "scaling.strategy=auto", "scaling.nproc=1", "logging.trackers=[]",
        "evaluation.serving_examples=8", "evaluation.serving_batch_sizes=[8]",
    ]
    return [arg for s in sets for arg in ("--set", s)]


@requires_minilm
def test_mtdnn_recipe_runs_with_a_tiny_encoder(tmp_path):
    from mtkd.recipe import load_recipe

    sets = _tiny_mtdnn_overrides(tmp_path)
    recipe = load_recipe(RECIPES / "mtdnn-kd-glue.yaml", sets[1::2])
    r = recipe.resolved
    assert r["training"]["optimizer"] == "adamax" and r["teachers"]["tasks"] == ["rte"]
    assert len(r["teachers"]["members"]) == 4

    result = run_cli("recipe", "run", RECIPES / "mtdnn-kd-glue.yaml", *sets, "--output", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    results = [json.loads(p.read_text()) for p in run_dir.glob("teachers/*/result.json")]
    assert len(results) == 4 and all(res["steps"] == 2 for res in results)
    # only RTE is distilled; CoLA trains on hard labels
    assert [p.name for p in run_dir.glob("soft_targets/*/*.safetensors")] == ["rte.safetensors"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"cola", "rte"}
    assert len(metrics["tasks"]["rte"]["teachers"]) == 4 and "student" in metrics["tasks"]["rte"]
    assert metrics["teacher_names"] == [m["name"] for m in r["teachers"]["members"]]
    assert (run_dir / "report.md").read_text().startswith("# mtkd report: mtdnn-kd-glue")


def test_a_later_encoder_parameter_keeps_the_shipped_hashes():
    """freeze_word_embeddings came after 0.1: recipes that leave it unset keep their stage keys."""
    from mtkd.recipe import load_recipe

    plain = load_recipe(RECIPES / "minilm-glue-kd.yaml")
    assert "freeze_word_embeddings" not in plain.resolved["encoder"]
    assert plain.hash == "bb8d8f40108f81f6"  # the docs/results.md run's version; a change retrains everything
    assert load_recipe(RECIPES / "minilm-glue-kd.yaml", ["encoder.freeze_word_embeddings=false"]).hash == plain.hash
    frozen = load_recipe(RECIPES / "minilm-glue-kd.yaml", ["encoder.freeze_word_embeddings=true"])
    assert frozen.hash != plain.hash and frozen.resolved["encoder"]["freeze_word_embeddings"] is True
