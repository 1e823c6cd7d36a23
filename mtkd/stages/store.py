"""The run store: one run folder, every path in it relative to it, one writer at a time.

- :meth:`RunStore.path` is the only way to a path inside the folder; it refuses a name that
  would leave it (``..``, an absolute path, a symbolic link pointing out).
- A lock file (``.mtkd.lock``: pid and host) is held for a whole run; a second run exits with a
  message naming the holder, a lock left by a dead process on this host is taken over.
- A stage unit's marker (``mtkd-stage.json`` in its folder) records its key and every output's
  size and digest; :meth:`RunStore.verify` checks them before the unit is reused.
- A unit that is redone is built in ``<folder>.staging`` and swapped in when complete: the old
  outputs stay until their replacement exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..errors import CheckpointError, MtkdError
from ..resumable import replace_dir

MARKER = "mtkd-stage.json"
#: ``versions/<recipe hash>.json``: the unit folders each recipe version used (``RunStore.record_units``)
VERSIONS = "versions"
LOCK = ".mtkd.lock"
_CHUNK = 1 << 20


class RunLockedError(MtkdError):
    """Another run holds the run folder."""


def file_digest(path: Path) -> str:
    """sha256 of the file; of a safetensors file, of its header with sorted keys and its data (the writer stores
    metadata in hash-map order, so the same tensors can give different bytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if Path(path).suffix == ".safetensors":
            head = fh.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = fh.read(size) if 0 < size < (1 << 27) else b""
            try:
                h.update(json.dumps(json.loads(header), sort_keys=True).encode())
            except (ValueError, UnicodeDecodeError):  # not a valid header: the raw bytes decide
                h.update(head + header)
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def combine(digests: dict[str, str]) -> str:
    """One digest for named parts (a folder's files, a stage's inputs)."""
    text = json.dumps(digests, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder``, relative to it, sorted (the marker itself excluded)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER)


def content_digest(path: Path, files: list[str] | None = None) -> str:
    """The digest of a file, or of a folder's files (names and contents): content, never the path."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    files = folder_files(path) if files is None else files
    return combine({f: file_digest(path / f) for f in files})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock_held = False

    # ------------------------------------------------------------ paths

    def path(self, *parts: str) -> Path:
        """``root/parts``; a name that escapes the run folder is an error, never a write elsewhere."""
        rel = Path(*parts) if parts else Path(".")
        if rel.is_absolute() or ".." in rel.parts:
            raise CheckpointError("a path outside the run folder", file=self.root, found=str(rel),
                                  expected="a name inside the run folder")
        full = self.root / rel
        root = self.root.resolve()
        resolved = full.resolve()
        if resolved != root and root not in resolved.parents:
            raise CheckpointError("a path that leaves the run folder (through a link)", file=self.root,
                                  found=str(rel), expected="a name inside the run folder")
        return full

    def rel(self, path: Path) -> str:
        """The form stored in files: relative to the run folder."""
        return Path(os.path.relpath(Path(path), self.root)).as_posix()

    def write_json(self, rel: str, obj) -> Path:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
        tmp.replace(path)
        return path

    def write_text(self, rel: str, text: str) -> Path:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path

    def read_json(self, rel: str):
        path = self.path(rel)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def record_units(self, recipe_hash: str, folders) -> None:
        """Add unit folders to ``versions/<recipe hash>.json``, the units this recipe version uses (run or reused),
        and mark it the latest version run: ``mtkd runs gc`` keeps what a finished or the latest version uses."""
        rel = f"{VERSIONS}/{recipe_hash}.json"
        try:
            old = self.read_json(rel) or {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        units = sorted(set(old.get("units") or ()) | {f for f in folders if f})
        self.write_json(rel, {"hash": recipe_hash, "units": units, "updated_ns": time.time_ns()})

    # ------------------------------------------------------------ the lock

    def acquire(self) -> None:
        """Hold the run folder for this process; raise RunLockedError if a live run holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.path(LOCK)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(lock.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    holder = {}
                pid, host = holder.get("pid"), holder.get("host")
                if host == me["host"] and isinstance(pid, int) and not _pid_alive(pid):
                    # A killed run's lock: move it aside (atomic, one taker wins) and try again.
                    try:
                        os.replace(lock, lock.with_name(f"{LOCK}.stale-{os.getpid()}"))
                        lock.with_name(f"{LOCK}.stale-{os.getpid()}").unlink()
                    except FileNotFoundError:
                        pass
                    continue
                if not holder:  # being written this instant by another run
                    time.sleep(0.2)
                    continue
                raise RunLockedError(
                    "another mtkd run is using this run folder", file=self.root,
                    found=f"pid {pid} on host {host} (since {holder.get('since')})",
                    hint=f"wait for it to finish, or use another --output; if that process is gone, delete {lock}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self._lock_held = True
            return
        raise RunLockedError("could not take the run folder's lock", file=lock)

    def release(self) -> None:
        if not self._lock_held:
            return
        lock = self.path(LOCK)
        try:
            if json.loads(lock.read_text(encoding="utf-8")).get("pid") == os.getpid():
                lock.unlink()
        except (OSError, json.JSONDecodeError):
            pass
        self._lock_held = False

    # ------------------------------------------------------------ markers

    def marker(self, folder: str) -> dict | None:
        try:
            return self.read_json(f"{folder}/{MARKER}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write_marker(self, folder: str, *, stage: str, key: str, outputs: list[str], info: dict | None = None,
                     recipe: str | None = None, seconds: float | None = None) -> dict:
        """Record the unit's outputs (size and digest each) last: the unit is complete once this exists.
        ``recipe``: the hash of the recipe version that made it (``mtkd runs gc`` tells such units apart);
        ``seconds``: the wall time of the run that completed it (a resumed job's earlier runs are not in it)."""
        base = self.path(folder)
        files = {}
        for name in outputs:
            p = base / name
            if not p.is_file():
                raise CheckpointError(f"stage {stage} did not write {name}", file=base)
            st = p.stat()
            files[name] = {"size": st.st_size, "sha256": file_digest(p), "mtime_ns": st.st_mtime_ns}
        marker = {"stage": stage, "key": key, "outputs": files,
                  "digest": combine({n: f["sha256"] for n, f in files.items()}), "info": info or {}}
        if recipe:
            marker["recipe"] = recipe
        if seconds is not None:
            marker["seconds"] = round(seconds, 3)
        self.write_json(f"{folder}/{MARKER}", marker)
        return marker

    def verify(self, folder: str, key: str) -> tuple[dict | None, str | None]:
        """The marker if the unit is complete for ``key`` and its outputs are intact; else (None, why)."""
        marker = self.marker(folder)
        if marker is None:
            return None, None
        if marker.get("key") != key:
            return None, "it belongs to other inputs"
        base = self.path(folder)
        touched = False
        for name, rec in marker.get("outputs", {}).items():
            p = base / name
            if not p.is_file():
                return None, f"{name} is missing"
            st = p.stat()
            if st.st_size != rec["size"]:
                return None, f"{name} changed size"
            # Unchanged since the marker was written: its digest stands. Otherwise (copied, touched) read it.
            if st.st_mtime_ns != rec.get("mtime_ns"):
                if file_digest(p) != rec["sha256"]:
                    return None, f"{name} changed"
                rec["mtime_ns"], touched = st.st_mtime_ns, True
        if touched:
            marker["refresh"] = True  # the caller (main process) records the new times: no re-reading next run
        return marker, None

    def refresh(self, folder: str, marker: dict) -> None:
        if marker.pop("refresh", False):
            self.write_json(f"{folder}/{MARKER}", marker)

    # ------------------------------------------------------------ replacing a unit

    def staging(self, folder: str) -> Path:
        return self.path(f"{folder}.staging")

    def swap_in(self, folder: str) -> None:
        """Replace ``folder`` by its complete staging folder; the old one goes only after the new one is in place."""
        self.path(f"{folder}.old")  # checked inside the run folder like every other path
        replace_dir(self.staging(folder), self.path(folder))

    def recover(self) -> None:
        """After a killed run: a unit moved aside but not yet replaced is put back (its marker decides the rest)."""
        for old in self.root.glob("*/*.old"):
            final = old.with_name(old.name[:-4])
            if not final.exists():
                os.replace(old, final)
            else:
                shutil.rmtree(old)
