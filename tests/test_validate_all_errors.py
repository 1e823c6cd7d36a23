"""`recipe validate` and `recipe run` report every problem of a recipe at once, each with file, field, expected
and found, and exit 2."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import pipeline_recipe, run_cli

from mtkd.errors import MtkdError


def bad_recipe(tmp_path):
    """Four independent problems: a shape error, two component errors, a data folder that does not exist."""
    path = pipeline_recipe(tmp_path)
    recipe = yaml.safe_load(path.read_text())
    recipe["training"]["epochs"] = 0  # pass 1 (shape)
    recipe["encoder"]["poling"] = "cls"  # pass 2: the encoder's params
    recipe["objective"] = {"classification": {"type": "mixture", "alpa": 0.5}}  # pass 2: a loss's params
    recipe["data"]["glue"] = str(tmp_path / "no-such-folder")  # the data source
    path.write_text(yaml.safe_dump(recipe))
    return path


EXPECTED = [  # (field, what the message says, expected, found)
    ("training.epochs", "invalid value", "greater than 0", "0"),
    ("encoder.poling", "did you mean 'pooling'", "one of: model", "'poling'"),
    ("objective.classification.alpa", "did you mean 'alpha'", "one of: hard, soft, alpha", "'alpa'"),
]


def test_validate_reports_every_problem(tmp_path):
    path = bad_recipe(tmp_path)
    result = run_cli("recipe", "validate", path)
    assert result.exit_code == 2, result.output
    blocks = re.split(r"(?m)^Error in ", result.output)[1:]
    assert len(blocks) == 4, result.output
    for (field, message, expected, found), block in zip(EXPECTED, blocks):
        assert block.startswith(f"{path}: {field}: ") and message in block, block
        assert "expected: " in block and expected in block and f"found: {found}" in block, block
    # one folder that both tasks read: one problem, naming both tasks and the folder
    assert blocks[3].startswith(f"{tmp_path / 'no-such-folder'}: tasks[0], tasks[1]: GLUE data folder not found")
    assert "Traceback" not in result.output and "more problem(s)" not in result.output


def test_run_reports_them_too_before_anything_runs(tmp_path):
    path = bad_recipe(tmp_path)
    result = run_cli("recipe", "run", path, "-q")
    assert result.exit_code == 2
    assert result.output.count("Error in ") == 4 and "GLUE data folder not found" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_valid_recipe_with_a_missing_folder_is_refused_by_run_up_front(tmp_path):
    """Only the data folder is wrong: `run` says so before loading anything, as `validate` does."""
    path = pipeline_recipe(tmp_path, data={"glue": str(tmp_path / "nowhere"), "max_length": 32})
    for command in (("recipe", "validate", path), ("recipe", "run", path, "-q")):
        result = run_cli(*command)
        assert result.exit_code == 2 and result.output.count("Error in ") == 1, result.output
        assert "GLUE data folder not found" in result.output


def _error_paths(path) -> list[str]:
    """The field of every error one validation of the recipe reports."""
    from mtkd.recipe import load_recipe

    with pytest.raises(MtkdError) as info:
        load_recipe(path)
    return [e.path for e in info.value.errors]


def test_errors_of_several_kinds_in_pass_two_are_all_collected(tmp_path):
    """An unknown component, a bad task parameter, an unknown head key and a duplicate seed in one recipe."""
    path = pipeline_recipe(tmp_path, heads={"default": {"type": "linear"}, "rtee": {"type": "linear"}},
                           tasks=[{"name": "rte", "max_train_examples": 8, "colour": "red"},
                                  {"name": "sst2", "max_train_examples": 8}],
                           student={"seeds": [1, 1], "objective": {"classification": {"type": "soft-cee"}}})
    assert _error_paths(path) == ["tasks[0].colour", "heads.rtee", "student.seeds[1]", "student.objective.classification.type"]


def test_the_encoder_input_limit_is_read_without_loading_it(tmp_path):
    from helpers import MINILM_ID
    from mtkd_hf.params import HFEncoderParams
    from mtkd_hf.sources import max_input_length

    assert max_input_length(HFEncoderParams(model=MINILM_ID)) == 512  # the offline mirror's tokenizer_config.json
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert max_input_length(HFEncoderParams(model=str(folder))) is None  # no tokenizer_config.json: unknown
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 1000000000000000019884624838656}')
    assert max_input_length(HFEncoderParams(model=str(folder))) is None  # transformers' "no limit"
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 128}')
    assert max_input_length(HFEncoderParams(model=str(folder))) == 128
    assert max_input_length(HFEncoderParams(model="some-org/not-downloaded-anywhere")) is None


def test_max_length_beyond_the_tokenizer_is_refused_at_validation(tmp_path):
    path = pipeline_recipe(tmp_path)
    ok = run_cli("recipe", "validate", path, "--set", "data.max_length=512")
    assert ok.exit_code == 0, ok.output
    result = run_cli("recipe", "validate", path, "--set", "data.max_length=513")
    assert result.exit_code == 2
    assert "data.max_length" in result.output and "at most 512" in result.output and "found: 513" in result.output


def test_a_members_encoder_and_training_errors_are_both_reported(tmp_path):
    path = pipeline_recipe(tmp_path, teachers={"members": [
        {"seed": 1, "encoder": {"poling": "cls"}, "training": {"epochs": -1}}, {"seed": 2, "heads": {"nope": {"type": "linear"}}}]})
    assert _error_paths(path) == ["teachers.members[0].encoder.poling", "teachers.members[0].training.epochs",
                     "teachers.members[1].heads.nope"]
