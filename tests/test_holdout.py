"""The holdout carve: no holdout text in the training rows (leakage), deterministic, independent of row order,
and the `evaluation.selection` recipe setting."""

from __future__ import annotations

import datasets
import pytest

from mtkd.data import fingerprint_dataset
from mtkd.data.holdout import carve_holdout, holdout_fraction
from mtkd.errors import DataError, RecipeError
from mtkd.recipe import Evaluation, load_recipe


def make_split(n=200, duplicates=True):
    # with duplicates, rows 150-199 repeat the texts of rows 0-49 with the other label
    key = (lambda i: i % 150) if duplicates else (lambda i: i)
    rows = [{"idx": i, "text_a": f"sentence number {key(i)}", "text_b": f"other {key(i) % 7}", "label": i // 150}
            for i in range(n)]
    return datasets.Dataset.from_list(rows)


def ids(ds):
    return list(ds["idx"])


def texts(ds):
    return {(r["text_a"], r["text_b"]) for r in ds}


def test_no_holdout_text_is_trained_on():
    ds = make_split()
    assert len(texts(ds)) == 150
    carve = carve_holdout(ds, 0.2, seed=42, task="rte")
    assert not texts(carve.holdout) & texts(carve.train)
    assert sorted(ids(carve.holdout) + ids(carve.train)) == list(range(200))  # a partition
    assert abs(len(carve.holdout) - 40) <= 1  # whole duplicate groups: may overshoot by one group of two
    # the rows keep their original order on both sides
    assert ids(carve.holdout) == sorted(ids(carve.holdout)) and ids(carve.train) == sorted(ids(carve.train))


def test_the_carve_is_deterministic_and_does_not_depend_on_row_order():
    ds = make_split(duplicates=False)
    a = carve_holdout(ds, 0.1, seed=42, task="rte")
    b = carve_holdout(ds, 0.1, seed=42, task="rte")
    assert a.fingerprint == b.fingerprint and ids(a.holdout) == ids(b.holdout)
    shuffled = ds.shuffle(seed=3)
    c = carve_holdout(shuffled, 0.1, seed=42, task="rte")
    assert set(ids(c.holdout)) == set(ids(a.holdout))
    # another seed or another task name carves other rows
    assert set(ids(carve_holdout(ds, 0.1, seed=43, task="rte").holdout)) != set(ids(a.holdout))
    assert set(ids(carve_holdout(ds, 0.1, seed=42, task="mrpc").holdout)) != set(ids(a.holdout))
    assert len(a.holdout) == 20 and len(a.train) == 180
    assert a.holdout_fingerprint == fingerprint_dataset(a.holdout)
    assert a.describe() == {"fraction": 0.1, "holdout_rows": 20, "train_rows": 180, "fingerprint": a.fingerprint,
                            "holdout_fingerprint": a.holdout_fingerprint}


def test_adding_rows_keeps_the_earlier_holdout_mostly_in_place():
    small = make_split(200, duplicates=False)
    big = datasets.Dataset.from_list(list(small) + [{"idx": 200 + i, "text_a": f"new {i}", "text_b": "x", "label": 0}
                                                    for i in range(20)])
    before = set(ids(carve_holdout(small, 0.1, seed=1, task="t").holdout))
    after = set(ids(carve_holdout(big, 0.1, seed=1, task="t").holdout))
    # by content: an old row can only leave the holdout when new rows sort before it (about 2 of 22 here)
    assert len(before & after) >= 15


def test_tiny_or_degenerate_splits():
    two = datasets.Dataset.from_list([{"idx": 0, "text_a": "a", "label": 0}, {"idx": 1, "text_a": "b", "label": 1}])
    carve = carve_holdout(two, 0.01, seed=0, task="t")  # at least one row held out, at least one left
    assert len(carve.holdout) == 1 and len(carve.train) == 1
    same = datasets.Dataset.from_list([{"idx": i, "text_a": "same", "label": i % 2} for i in range(5)])
    with pytest.raises(DataError, match="fewer than 2 distinct texts"):
        carve_holdout(same, 0.5, seed=0, task="t")
    with pytest.raises(RecipeError, match="between 0 and 1"):
        carve_holdout(two, 1.0, seed=0, task="t")


def test_selection_setting():
    assert Evaluation().selection == "dev"
    assert "selection" not in Evaluation().model_dump(mode="json")  # earlier runs' recipe hashes hold
    assert Evaluation(selection="holdout: 0.1").model_dump(mode="json")["selection"] == {"holdout": 0.1}
    assert Evaluation(selection={"holdout": 0.2}).selection.holdout == 0.2
    assert holdout_fraction("dev") is None and holdout_fraction({"holdout": 0.3}) == 0.3


@pytest.mark.parametrize("value, message", [
    ("holdout:1.5", "between 0 and 1"), ("test", "expected `dev` or {holdout: FRACTION}"),
    ("{holdout: 0.1, extra: 1}", "expected `dev` or {holdout: FRACTION}"), ("holdout:abc", "between 0 and 1"),
])
def test_bad_selection_is_a_recipe_error(value, message):
    with pytest.raises(RecipeError) as info:
        load_recipe("recipes/quickstart.yaml", [f"evaluation.selection={value}"])
    assert info.value.path == "evaluation.selection"
    assert message in str(info.value)


def test_quickstart_with_a_holdout_resolves():
    recipe = load_recipe("recipes/quickstart.yaml", ["evaluation.selection=holdout:0.2"])
    assert recipe.resolved["evaluation"]["selection"] == {"holdout": 0.2}
    assert load_recipe("recipes/quickstart.yaml").resolved["evaluation"]["selection"] == {"holdout": 0.1}
    assert recipe.hash != load_recipe("recipes/quickstart.yaml").hash
    assert load_recipe("recipes/quickstart.yaml", ["evaluation.selection=dev"]).hash != recipe.hash
