"""README's `table` example, run as written (with a tiny encoder and one short epoch swapped in): a CSV
classification task, a TSV regression task on pairs from one file with a split column, a JSON-lines task."""

from __future__ import annotations

import csv
import json
import random
import re

import yaml
from helpers import REPO, TINY_ENCODER, requires_minilm, run_cli

pytestmark = requires_minilm

WORDS = ("the", "movie", "plot", "music", "cast", "story", "ending", "scenes", "really", "quite")


def readme_recipe() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- table-example -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "README lost its table example"
    return match.group(1)


def write_files(folder, rng):
    def sentence(word):
        words = [rng.choice(WORDS) for _ in range(5)]
        words.insert(rng.randrange(6), word)
        return " ".join(words)

    for name, n in (("reviews-train.csv", 40), ("reviews-dev.csv", 16)):
        with open(folder / name, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            for i in range(n):
                good = i % 2 == 0
                w.writerow([sentence("great" if good else "awful") + ', "quoted", text', "pos" if good else "neg"])
    with open(folder / "pairs.tsv", "w", encoding="utf-8") as fh:
        fh.write("id\tsentence_A\tsentence_B\tscore\tset\n")
        for i, part in enumerate(["TRAIN"] * 40 + ["TRIAL"] * 12 + ["TEST"] * 6):
            score = "" if part == "TEST" else f"{1 + (i % 5) * 0.8:.1f}"
            fh.write(f"{100 + i}\t{sentence('cat')}\t{sentence('dog')}\t{score}\t{part}\n")
    for name, n in (("intents-train.jsonl", 30), ("intents-dev.jsonl", 12)):
        with open(folder / name, "w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps({"utterance": sentence(("book", "cancel", "weather")[i % 3]), "intent": i % 3})
                         + "\n")


def test_the_readme_table_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, random.Random(0))
    (tmp_path / "my-data.yaml").write_text(readme_recipe(), encoding="utf-8")
    assert run_cli("recipe", "validate", "my-data.yaml").exit_code == 0
    # The README's recipe unchanged; a child swaps in the tiny encoder and a short run.
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump({
        "extends": "my-data.yaml", "encoder": TINY_ENCODER, "output_dir": str(tmp_path / "runs"),
        "data": {"cache_dir": str(tmp_path / "cache")}, "evaluation": {"serving": False},
        "training": {"epochs": 1, "batch_size": 16, "num_threads": 1}}), encoding="utf-8")
    result = run_cli("recipe", "run", "fast.yaml", "-q")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "my-data" / "metrics.json").read_text())
    text = json.dumps(metrics)
    for task, metric in (("sentiment", "accuracy"), ("relatedness", "pearson"), ("intent", "accuracy")):
        assert task in text and metric in text, (task, metric)

    # The split column selected the rows: 40 train, 12 dev, 6 test (unlabeled), ids from the id column.
    shown = run_cli("data", "show", "table", "--json", "--param", "train=pairs.tsv", "--param", "split_column=set",
                    "--param", "split_values={train: TRAIN, validation: TRIAL, test: TEST}",
                    "--param", "text_columns=[sentence_A, sentence_B]", "--param", "label_column=score",
                    "--param", "id_column=id", "--param", "task_type=regression")
    assert shown.exit_code == 0, shown.output
    splits = json.loads(shown.stdout)["splits"]
    assert {s: v["rows"] for s, v in splits.items()} == {"train": 40, "validation": 12, "test": 6}
    assert splits["test"]["labels"] == {"unlabeled": 6}
