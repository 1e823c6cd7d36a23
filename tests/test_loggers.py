"""Loggers (plugins/mtkd_loggers): a real offline W&B run read back from disk, the JSON-lines logger,
mode resolution, secret scrubbing, and the offline reader on hand-built files."""

from __future__ import annotations

import copy
import json
import struct
import zlib

import pytest
import torch
from mtkd_loggers import has_wandb_api_key, is_secret_name, resolve_mode, scrub_secrets
from mtkd_loggers.offline_reader import HEADER, find_wandb_runs, iter_records, read_wandb_offline

from mtkd.errors import DataError, RecipeError

SECRET = "s3cr3t-value-never-logged"

RECIPE = {
    "name": "demo",
    "seed": 42,
    "encoder": {"type": "hf", "model": "minilm", "hub_token": SECRET},
    "training": {"lr": 5e-5, "token_budget": 4096, "sampling": {"type": "proportional"}},
    "logging": {"trackers": [{"type": "wandb", "api_key": SECRET, "project": "p"}, {"type": "jsonl"}]},
    "tasks": [{"name": "rte"}, {"name": "mrpc", "DbPassword": SECRET}],
    "client_secret": SECRET,
}
# The same recipe by hand, minus every credential-like key.
EXPECTED_CONFIG = {
    "name": "demo",
    "seed": 42,
    "encoder": {"type": "hf", "model": "minilm"},
    "training": {"lr": 5e-5, "token_budget": 4096, "sampling": {"type": "proportional"}},
    "logging": {"trackers": [{"type": "wandb", "project": "p"}, {"type": "jsonl"}]},
    "tasks": [{"name": "rte"}, {"name": "mrpc"}],
}


@pytest.fixture
def quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)


def test_scrub_secrets_by_hand():
    recipe = copy.deepcopy(RECIPE)
    assert scrub_secrets(recipe) == EXPECTED_CONFIG
    assert recipe == RECIPE  # the caller's recipe is not changed
    for name in ("api_key", "WANDB_API_KEY", "hf_token", "apiKey", "password", "client_secret"):
        assert is_secret_name(name), name
    for name in ("lr", "tokenizer", "token_budget", "seed", "project"):
        assert not is_secret_name(name), name


def test_wandb_offline_run_round_trip(registries, tmp_path, monkeypatch, quiet_wandb):
    wandb_dir = tmp_path / "wandb-dir"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    logger = registries.loggers.create("wandb", {"project": "mtkd-test", "tags": ["smoke"], "notes": "n"})
    logger.start(run_dir=tmp_path / "run", name="teacher-0", group="demo-1", job_type="teacher",
                 config=copy.deepcopy(RECIPE))
    losses = [0.9, 0.7, 0.4]
    for step, loss in enumerate(losses):
        logger.log({"train/loss": loss, "train/lr": 1e-5 * (step + 1)}, step=step)
    logger.summary({"best/score": 71.5})
    logger.finish()
    assert logger.mode == "offline"

    out = read_wandb_offline(wandb_dir)  # WANDB_DIR wins over the run folder as the default `dir`
    assert out["file"].startswith(str(logger.run_dir))
    assert out["config"] == EXPECTED_CONFIG
    assert [row["_step"] for row in out["history"]] == [0, 1, 2]
    for step, row in enumerate(out["history"]):
        assert row == {"_step": step, "train/loss": losses[step], "train/lr": pytest.approx(1e-5 * (step + 1))}
    assert out["summary"]["best/score"] == 71.5
    assert out["summary"]["train/loss"] == 0.4  # W&B keeps the last logged value
    assert out["run"]["job_type"] == "teacher" and out["run"]["group"] == "demo-1"
    assert out["run"]["name"] == "teacher-0" and out["run"]["project"] == "mtkd-test"
    assert out["run"]["tags"] == ["smoke"] and out["run"]["notes"] == "n"
    assert out["exit_code"] == 0
    # No secret anywhere on disk: not in the run file, its logs, nor anything else wandb wrote.
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.wandb"))
    for path in wandb_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_wandb_auto_without_key_goes_offline_once_per_logger(registries, tmp_path, monkeypatch, capsys,
                                                               quiet_wandb):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login me password not-wandb\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    logger = registries.loggers.create("wandb", {"name": "demo"})  # mode: auto
    run_dir = tmp_path / "run"
    for job in ("teacher", "student"):  # one logger instance, one W&B run per job
        logger.start(run_dir=run_dir, name=job, group="g", job_type=job, config={"job": job})
        logger.log({"loss": 1.0 if job == "teacher" else 2.0}, step=5)
        logger.finish()
        assert logger.mode == "offline"
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("mtkd: no W&B API key")]
    assert len(notices) == 1 and "offline" in notices[0]

    runs = find_wandb_runs(run_dir)  # `dir` defaults to the run folder
    assert len(runs) == 2
    got = {r["run"]["job_type"]: r for r in map(read_wandb_offline, runs)}
    assert got["teacher"]["config"] == {"job": "teacher"} and got["student"]["config"] == {"job": "student"}
    assert got["teacher"]["history"] == [{"loss": 1.0, "_step": 5}]
    assert got["student"]["history"] == [{"loss": 2.0, "_step": 5}]
    assert got["student"]["run"]["name"] == "demo-student"
    with pytest.raises(DataError, match="several W&B runs"):
        read_wandb_offline(run_dir)


def test_mode_resolution(tmp_path):
    no_netrc = {"NETRC": str(tmp_path / "missing")}
    assert resolve_mode("auto", no_netrc) == ("offline", True)
    assert resolve_mode("auto", {**no_netrc, "WANDB_API_KEY": "k" * 40}) == ("online", False)
    assert resolve_mode("auto", {**no_netrc, "WANDB_API_KEY": "k", "WANDB_MODE": "disabled"}) == ("disabled", False)
    assert resolve_mode("offline", {**no_netrc, "WANDB_MODE": "online"}) == ("offline", False)  # explicit wins
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc.chmod(0o600)
    assert has_wandb_api_key({"NETRC": str(netrc)})
    assert resolve_mode("auto", {"NETRC": str(netrc)}) == ("online", False)
    # A self-hosted server: the netrc entry must be for its host.
    assert not has_wandb_api_key({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"})
    netrc.write_text("machine api.wandb.ai login user password\n")  # malformed: no password value
    assert not has_wandb_api_key({"NETRC": str(netrc)})


def test_wandb_params_are_validated(registries):
    with pytest.raises(RecipeError) as info:
        registries.loggers.create("wandb", {"mode": "sometimes"}, path="logging.trackers[0]")
    assert info.value.path == "logging.trackers[0].mode"
    with pytest.raises(RecipeError):
        registries.loggers.create("wandb", {"api_key": "x"})  # unknown key: keys belong in the environment
    with pytest.raises(RuntimeError, match="start"):
        registries.loggers.create("wandb", {}).log({"a": 1.0}, step=0)


def test_jsonl_appends_and_survives_restart(registries, tmp_path):
    run_dir = tmp_path / "run"
    first = registries.loggers.create("jsonl", {})
    first.start(run_dir=run_dir, name="student", group=None, job_type="student", config={"api_key": SECRET})
    first.log({"loss": torch.tensor(0.5), "acc": 0.25}, step=0)
    first.log({"loss": float("nan")}, step=1)
    # Each line is on disk as soon as it is logged, before finish().
    assert len((run_dir / "tracker.jsonl").read_text().splitlines()) == 2
    first.finish()

    resumed = registries.loggers.create("jsonl", {"file": "logs/train.jsonl"})
    resumed.start(run_dir=run_dir, name="student", group=None, job_type="student", config={})
    resumed.log({"loss": 0.125}, step=2)
    resumed.finish()
    again = registries.loggers.create("jsonl", {})
    again.start(run_dir=run_dir, name="student", group=None, job_type="student", config={})
    again.log({"loss": 0.25}, step=2)
    again.summary({"best": 1.0})  # not written: the core keeps final values in metrics.json
    again.finish()

    def strict(text):  # plain JSON only: NaN is not allowed
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    lines = [strict(line) for line in (run_dir / "tracker.jsonl").read_text().splitlines()]
    assert lines == [{"step": 0, "loss": 0.5, "acc": 0.25}, {"step": 1, "loss": None}, {"step": 2, "loss": 0.25}]
    assert [strict(line) for line in (run_dir / "logs" / "train.jsonl").read_text().splitlines()] == [
        {"step": 2, "loss": 0.125}]
    assert SECRET not in (run_dir / "tracker.jsonl").read_text()


# --- the offline reader on files built by hand -------------------------------------------------------

def write_log(path, records, *, block=32 * 1024):
    """A LevelDB-log-format file, written independently of wandb: header, then chunks split at block ends."""
    out = bytearray(HEADER)
    for data in records:
        first = True
        while True:
            left = block - len(out) % block
            if left < 7:
                out += bytes(left)
                continue
            piece, data = data[:left - 7], data[left - 7:]
            kind = (1 if not data else 2) if first else (4 if not data else 3)
            out += struct.pack("<IHB", zlib.crc32(piece, zlib.crc32(bytes([kind]))), len(piece), kind) + piece
            first = False
            if not data:
                break
    path.write_bytes(bytes(out))
    return path


def make_records():
    from wandb.proto import wandb_internal_pb2 as pb

    def rec(**kw):
        return pb.Record(**kw).SerializeToString()

    run = pb.RunRecord(run_id="abc", project="p", job_type="student", display_name="s", run_group="g")
    run.config.update.add(key="big", value_json=json.dumps("x" * 70_000))  # spans three blocks
    run.config.update.add(key="_wandb", value_json="{}")
    hist = pb.HistoryRecord()
    hist.item.add(nested_key=["eval", "rte"], value_json="71.5")
    hist.item.add(key="loss", value_json="NaN")
    hist.item.add(key="_step", value_json="3")
    summary = pb.SummaryRecord()
    summary.update.add(key="best", value_json='{"k": 1}')
    summary.update.add(nested_key=["best", "j"], value_json="2")
    removal = pb.SummaryRecord()
    removal.remove.add(key="gone")
    early = pb.SummaryRecord()
    early.update.add(key="gone", value_json="1")
    config = pb.ConfigRecord()
    config.update.add(nested_key=["late", "x"], value_json="true")
    return [rec(run=run), rec(history=hist), rec(summary=early), rec(summary=summary), rec(summary=removal),
            rec(config=config), rec(exit=pb.RunExitRecord(exit_code=1))]


def test_reader_on_hand_built_file(tmp_path):
    path = write_log(tmp_path / "run-abc.wandb", make_records())
    assert path.stat().st_size > 2 * 32 * 1024
    out = read_wandb_offline(path)
    assert out["config"] == {"big": "x" * 70_000, "late": {"x": True}}
    assert read_wandb_offline(path, include_internal=True)["config"]["_wandb"] == {}
    (row,) = out["history"]
    assert row["eval"] == {"rte": 71.5} and row["_step"] == 3 and row["loss"] != row["loss"]  # NaN
    assert out["summary"] == {"best": {"k": 1, "j": 2}}
    assert out["run"]["job_type"] == "student" and out["exit_code"] == 1


def test_reader_small_blocks_and_damage(tmp_path):
    records = make_records()
    # Tiny blocks exercise first/middle/last pieces and block trailers on every record.
    small = write_log(tmp_path / "small.wandb", records, block=64)
    assert list(iter_records(small, block=64)) == records

    good = write_log(tmp_path / "run-x.wandb", records)
    data = good.read_bytes()
    torn = tmp_path / "torn.wandb"
    torn.write_bytes(data[:-5])  # a killed writer: the last record is dropped, the rest is read
    assert len(list(iter_records(torn))) == len(records) - 1
    flipped = bytearray(data)
    flipped[len(HEADER) + 7 + 3] ^= 0xFF
    (tmp_path / "flipped.wandb").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="checksum"):
        read_wandb_offline(tmp_path / "flipped.wandb")
    (tmp_path / "other.wandb").write_bytes(b"SQLite format 3\x00")
    with pytest.raises(DataError, match="not a W&B run file"):
        read_wandb_offline(tmp_path / "other.wandb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no W&B run file"):
        read_wandb_offline(tmp_path / "empty")
