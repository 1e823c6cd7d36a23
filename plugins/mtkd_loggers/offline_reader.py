"""Read what an offline W&B run logged, from its ``.wandb`` file.

``WANDB_MODE=offline`` writes ``<dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb`` and no config
or summary file, and wandb has no reader for it. The file is in the LevelDB log format:

- a 7-byte file header: ``b":W&B"``, the magic number 0xBEE1 (2 bytes, little endian), version 0;
- then 32 KiB blocks (counted from the start of the file, header included) of chunks, each with a
  7-byte header: CRC-32 (IEEE, of the type byte then the data; 4 bytes LE), data length (2 bytes LE),
  type (1 = full record, 2 = first, 3 = middle, 4 = last piece of a record split across blocks);
  fewer than 7 bytes left in a block are zero padding;
- each record is a serialized ``wandb.proto.wandb_internal_pb2.Record``; config, history and
  summary items carry a key path (``key`` or ``nested_key``) and a JSON value (``value_json``).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtkd.errors import DataError

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

#: W&B's own bookkeeping, left out unless ``include_internal=True`` (``_step`` is always kept).
INTERNAL_KEYS = frozenset({"_wandb", "_runtime", "_timestamp"})


def find_wandb_runs(path) -> list[Path]:
    """Every ``run-*.wandb`` file under ``path`` (not following links such as ``latest-run``), oldest first."""
    found = []
    for root, dirs, files in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
        found += [Path(root) / f for f in files if f.startswith("run-") and f.endswith(".wandb")]
    # offline-run-<YYYYMMDD_HHMMSS>-<id>: the folder name sorts by start time
    return sorted(found, key=lambda p: (p.parent.name, p.name))


def iter_records(file, *, block: int = BLOCK) -> Iterator[bytes]:
    """The raw records of a LevelDB-log-format ``.wandb`` file, in order.

    A torn last chunk (the writer was killed) ends the iteration quietly; a checksum mismatch or a
    malformed chunk anywhere else is a DataError. ``block`` is the block size (wandb uses 32 KiB).
    """
    data = Path(file).read_bytes()
    if data[:4] != HEADER[:4]:
        raise DataError("not a W&B run file", file=file, expected=f"a file starting with {HEADER[:4]!r}",
                        found=data[:4])
    if len(data) < len(HEADER) or data[:len(HEADER)] != HEADER:
        raise DataError("unsupported W&B run file header", file=file, expected=repr(HEADER),
                        found=data[:len(HEADER)], hint="the file was written by a newer wandb version")
    pos, pieces = len(HEADER), None
    while pos < len(data):
        left_in_block = block - pos % block
        if left_in_block < CHUNK_HEADER:  # trailer: too small for a chunk header
            pos += left_in_block
            continue
        if pos + CHUNK_HEADER > len(data):
            return  # torn chunk header at the end
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zero-filled rest of a block
            pos += left_in_block
            continue
        if CHUNK_HEADER + length > left_in_block:
            raise DataError("corrupt W&B run file: chunk crosses a block boundary", file=file,
                            expected=f"at most {left_in_block - CHUNK_HEADER} bytes", found=length,
                            hint=f"at byte offset {pos}")
        start = pos + CHUNK_HEADER
        if start + length > len(data):
            return  # torn chunk at the end
        chunk = data[start:start + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise DataError("corrupt W&B run file: checksum mismatch", file=file, hint=f"at byte offset {pos}")
        pos = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pieces = [chunk]
        elif kind in (MIDDLE, LAST):
            if pieces is None:
                raise DataError("corrupt W&B run file: record piece without its first piece", file=file,
                                hint=f"at byte offset {pos - length - CHUNK_HEADER}")
            pieces.append(chunk)
            if kind == LAST:
                yield b"".join(pieces)
                pieces = None
        else:
            raise DataError("corrupt W&B run file: unknown chunk type", file=file, expected="1, 2, 3 or 4",
                            found=kind, hint=f"at byte offset {pos - length - CHUNK_HEADER}")


def _key_path(item) -> tuple[str, ...]:
    return tuple(item.nested_key) if len(item.nested_key) else (item.key,)


def _value(item) -> Any:
    if item.value_json:
        return json.loads(item.value_json)  # accepts W&B's NaN / Infinity
    # history items may carry a typed value instead of JSON
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if kind is None or kind == "none":
        return None
    value = getattr(item, kind)
    return json.loads(value) if kind == "json" else value


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for part in path[:-1]:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[path[-1]] = value


def _remove(tree: dict, path: tuple[str, ...]) -> None:
    for part in path[:-1]:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(path[-1], None)


def _drop_internal(tree: dict) -> dict:
    return {k: v for k, v in tree.items() if k not in INTERNAL_KEYS}


def read_wandb_offline(run_dir_or_file, *, include_internal: bool = False) -> dict:
    """What one offline W&B run logged.

    ``run_dir_or_file`` is a ``.wandb`` file, an ``offline-run-*`` folder, or any folder holding
    exactly one run (e.g. the ``dir`` given to ``wandb.init``). Returns::

        {"run": {"id", "project", "entity", "group", "job_type", "name", "tags", "notes"},
         "config": {...}, "history": [{key: value, ..., "_step": n}, ...], "summary": {...},
         "exit_code": int | None}

    Nested keys become nested dicts, as they were logged. W&B's own keys (``_wandb``, ``_runtime``,
    ``_timestamp``) are left out unless ``include_internal``.
    """
    path = Path(run_dir_or_file)
    if path.is_dir():
        files = find_wandb_runs(path)
        if not files:
            raise DataError("no W&B run file found", file=path, expected="an offline-run-*/run-*.wandb file below it")
        if len(files) > 1:
            raise DataError("several W&B runs found", file=path, expected="one run",
                            found=[str(f.relative_to(path)) for f in files],
                            hint="pass one of the .wandb files, or list them with find_wandb_runs()")
        path = files[0]
    elif not path.is_file():
        raise DataError("W&B run file not found", file=path)

    from wandb.proto import wandb_internal_pb2 as pb  # lazily: importing wandb is slow

    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    exit_code = None
    for raw in iter_records(path):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except Exception as exc:  # protobuf's DecodeError
            raise DataError(f"corrupt W&B run file: a record does not parse ({exc})", file=path) from None
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run = {"id": r.run_id, "project": r.project, "entity": r.entity, "group": r.run_group,
                   "job_type": r.job_type, "name": r.display_name, "tags": list(r.tags), "notes": r.notes}
            for item in r.config.update:
                _set(config, _key_path(item), _value(item))
        elif kind == "config":
            for item in record.config.update:
                _set(config, _key_path(item), _value(item))
            for item in record.config.remove:
                _remove(config, _key_path(item))
        elif kind == "summary":
            for item in record.summary.update:
                _set(summary, _key_path(item), _value(item))
            for item in record.summary.remove:
                _remove(summary, _key_path(item))
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, _key_path(item), _value(item))
            row.setdefault("_step", record.history.step.num)
            history.append(row)
        elif kind == "exit":
            exit_code = record.exit.exit_code

    if not include_internal:
        config, summary = _drop_internal(config), _drop_internal(summary)
        history = [_drop_internal(row) for row in history]
    return {"run": run, "config": config, "history": history, "summary": summary, "exit_code": exit_code,
            "file": str(path)}
