"""mtkd first-party plugin: metric loggers.

- ``wandb``: one Weights & Biases run per job (teachers, student, evaluation), grouped by recipe run,
  with the resolved recipe (secrets removed) as the run config. Offline when no API key is set.
- ``jsonl``: one JSON object per ``log`` call, appended to a file in the run folder.

What an offline W&B run logged can be read back with
:func:`mtkd_loggers.offline_reader.read_wandb_offline`.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

import mtkd
from mtkd.errors import MtkdError
from mtkd.params import Params

#: A config key whose name contains one of these is never sent to W&B ...
SECRET_PARTS = ("key", "token", "secret", "password")
#: ... unless the match is only inside one of these harmless names (mtkd's own ``training.token_budget``).
HARMLESS_NAMES = ("tokenizer", "token_budget")

DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def is_secret_name(name) -> bool:
    """Whether a config key looks like it holds a credential (``api_key``, ``hf_token``, ``dbPassword``, ...)."""
    text = str(name).lower()
    for harmless in HARMLESS_NAMES:
        text = text.replace(harmless, "")
    return any(part in text for part in SECRET_PARTS)


def scrub_secrets(value):
    """A copy of ``value`` with every mapping key that looks like a credential removed, at any depth."""
    if isinstance(value, dict):
        return {k: scrub_secrets(v) for k, v in value.items() if not is_secret_name(k)}
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(v) for v in value]
    return value


def has_wandb_api_key(environ=None) -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc file for the W&B host (``WANDB_BASE_URL``)."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return True
    path = Path(environ["NETRC"]).expanduser() if environ.get("NETRC") else Path("~/.netrc").expanduser()
    host = urlsplit(environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST).netloc
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):  # no file, unreadable, or malformed: no key
        return False
    return bool(entry and entry[2])


def resolve_mode(mode: str, environ=None) -> tuple[str, bool]:
    """The W&B mode to use, and whether it is offline because no key was found.

    An explicit ``mode`` wins; for ``auto``, ``WANDB_MODE`` from the environment wins if set, else
    online when an API key is configured, offline otherwise.
    """
    environ = os.environ if environ is None else environ
    if mode != "auto":
        return mode, False
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"], False
    if has_wandb_api_key(environ):
        return "online", False
    return "offline", True


class WandbParams(Params):
    project: str = "mtkd"
    entity: str | None = None
    group: str | None = Field(None, description="default: the one the core gives (one group per recipe run)")
    name: str | None = Field(None, description="prefix of each job's run name: `<name>-<job>`")
    tags: list[str] = Field(default_factory=list)
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: WANDB_MODE if set, else online with an API key, offline without")
    dir: str | None = Field(None, description="where wandb writes; default WANDB_DIR, else the run folder")
    notes: str | None = None


class WandbLogger:
    """Weights & Biases: one run per job, config = the resolved recipe without secrets."""

    def __init__(self, params: WandbParams | None = None):
        self.params = params or WandbParams()
        self._run = None
        self._noticed = False
        self.mode: str | None = None
        self.run_dir: Path | None = None  # the offline-run-*/run-* folder of the current (or last) job

    def start(self, *, run_dir, name: str, group: str | None, job_type: str, config: dict,
              run_id: str | None = None) -> None:
        import wandb  # lazily: importing wandb takes a while and most commands never log

        if self._run is not None:  # a job that did not call finish(): close it before the next one
            self.finish()
        p = self.params
        mode, no_key = resolve_mode(p.mode)
        directory = Path(p.dir or os.environ.get("WANDB_DIR") or run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        if no_key and not self._noticed and not os.environ.get("MTKD_QUIET"):  # -q
            print(f"mtkd: no W&B API key (WANDB_API_KEY or a netrc entry); logging offline under {directory} "
                  f"-- upload later with `wandb sync`", file=sys.stderr)
            self._noticed = True
        try:
            self._run = wandb.init(
                project=p.project, entity=p.entity, group=p.group or group, job_type=job_type,
                name=f"{p.name}-{name}" if p.name else name, tags=list(p.tags) or None, notes=p.notes,
                dir=str(directory), mode=mode, config=scrub_secrets(config),
                reinit="create_new",  # our own run, independent of any other run in the process
                # The job's stored id: a resumed job continues its own run instead of starting a second one.
                id=run_id, resume="allow" if run_id else None,
            )
        except wandb.Error as exc:
            raise MtkdError(f"could not start a W&B run for job {name!r}: {exc}", path="logging.trackers",
                            hint="check the network and API key, or set `mode: offline` on the wandb tracker") from exc
        self.mode = mode
        self.run_dir = Path(self._run.dir).parent if mode != "disabled" else None

    def _active(self):
        if self._run is None:
            raise RuntimeError("WandbLogger: start() must be called before log()/summary()")
        return self._run

    def log(self, metrics: dict[str, float], *, step: int) -> None:
        self._active().log(dict(metrics), step=int(step))

    def summary(self, values: dict[str, Any]) -> None:
        self._active().summary.update(dict(values))

    def tracking_key(self) -> str:
        """Runs land in one W&B project: a job logged there once is not backfilled there again."""
        return f"wandb:{self.params.entity or ''}/{self.params.project}"

    def log_table(self, key: str, columns: list[str], rows: list[list], *, step: int | None = None) -> None:
        import wandb

        self._active().log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def log_images(self, images: dict[str, Path], *, step: int | None = None) -> None:
        import wandb

        self._active().log({f"plots/{name}": wandb.Image(str(path)) for name, path in images.items()}, step=step)

    def finish(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        run_file = self.run_dir / f"run-{run.id}.wandb" if self.mode == "offline" else None
        run.finish()  # wandb.finish() for this run (ours is not the global wandb.run)
        if run_file is not None:
            _wait_until_written(run_file)


def _wait_until_written(run_file: Path, timeout: float = 60.0) -> None:
    """Wait until an offline run file holds the run's exit record.

    wandb writes the file from its own service process, which can still be writing when ``finish()``
    returns (seen on a loaded 2-core machine): reading the run back, or exiting, at that moment
    would find it incomplete.
    """
    from mtkd.errors import DataError

    from .offline_reader import read_wandb_offline

    deadline = time.monotonic() + timeout
    while True:
        try:
            if run_file.is_file() and read_wandb_offline(run_file)["exit_code"] is not None:
                return
        except DataError:  # a record being written
            pass
        if time.monotonic() > deadline:
            print(f"mtkd: W&B has not finished writing {run_file} after {timeout:.0f} s", file=sys.stderr)
            return
        time.sleep(0.1)


class JsonlParams(Params):
    file: str = Field("tracker.jsonl", description="file name, relative to the run folder")


def _json_value(value):
    """Plain JSON: tensors and numpy scalars as numbers, NaN and infinities as null."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class JsonlLogger:
    """One JSON object per log call, ``{"step": ..., **metrics}``, appended to a file in the run folder.

    The file is opened in append mode, so a resumed run keeps the lines of the run it continues (steps
    logged after the last checkpoint appear twice; the later line is the one of the resumed run).
    ``summary`` writes nothing: final values are in the run's metrics.json.
    """

    def __init__(self, params: JsonlParams | None = None):
        self.params = params or JsonlParams()
        self._fh = None
        self.path: Path | None = None

    def start(self, *, run_dir, name: str, group: str | None, job_type: str, config: dict,
              run_id: str | None = None) -> None:
        self.finish()
        self.path = Path(run_dir) / self.params.file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # kept open until finish()

    def log(self, metrics: dict[str, float], *, step: int) -> None:
        if self._fh is None:
            raise RuntimeError("JsonlLogger: start() must be called before log()")
        row = {"step": int(step), **{str(k): _json_value(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row, allow_nan=False) + "\n")
        self._fh.flush()  # a killed run keeps every line it logged

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


@mtkd.hookimpl
def register_loggers(register):
    register("wandb", WandbLogger, params=WandbParams)
    register("jsonl", JsonlLogger, params=JsonlParams)
