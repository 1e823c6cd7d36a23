"""The versions of a recipe kept in a run folder (``reports/<recipe hash>/``): ``mtkd runs list`` and
``mtkd runs compare``."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError, RecipeError
from ..scores import task_score

ROLES = ("student", "control", "ensemble", "teachers")


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _read_json(path: Path, keys=()) -> dict:
    """A run folder's JSON file; a damaged one is a CheckpointError naming it, not a traceback."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"not valid JSON ({exc})", file=path, expected="the JSON file mtkd wrote here") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise CheckpointError(f"lacks {', '.join(missing)}", file=path, expected="the JSON file mtkd wrote here")
    return data


def read_versions(run_dir: Path) -> list[dict]:
    """Every finished version in the run folder, oldest first, the latest marked."""
    run_dir = Path(run_dir)
    latest = _read_json(run_dir / "recipe.json") if (run_dir / "recipe.json").is_file() else {}
    out = []
    for folder in sorted((run_dir / "reports").glob("*")):
        if not (folder / "metrics.json").is_file() or not (folder / "recipe.json").is_file():
            continue
        version = _read_json(folder / "recipe.json", ("hash", "recipe"))
        metrics = _read_json(folder / "metrics.json")
        out.append({"hash": version["hash"], "created": version.get("created"), "run_dir": str(run_dir),
                    "overrides": version.get("overrides", []), "recipe": version["recipe"], "metrics": metrics,
                    "latest": version["hash"] == latest.get("hash")})
    out.sort(key=lambda v: v["created"] or "")
    flat = [_flatten(v["recipe"]) for v in out]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1] if len(out) > 1 else []
    for v, f in zip(out, flat):
        v["differs"] = {k: f.get(k) for k in differ}
    return out


def scores(metrics: dict) -> dict:
    s = metrics.get("score", {})
    return {"student": s.get("student"), "control": s.get("control"), "ensemble": s.get("ensemble"),
            "teachers": s.get("teachers_mean")}


def find_run_dirs(root: Path) -> list[Path]:
    root = Path(root)
    if (root / "reports").is_dir():
        return [root]
    return sorted(p for p in root.glob("*") if (p / "reports").is_dir())


def resolve_version(spec: str) -> dict:
    """``RUN_DIR`` (its latest version), ``RUN_DIR@HASH`` (a hash prefix) or ``RUN_DIR/reports/HASH``."""
    path, _, prefix = spec.partition("@")
    folder = Path(path)
    if folder.parent.name == "reports" and not prefix:
        folder, prefix = folder.parent.parent, folder.name
    versions = read_versions(folder) if folder.is_dir() else []
    if not versions:
        raise CheckpointError("no finished recipe version in this folder", file=folder,
                              expected="a run folder with reports/<hash>/ (run a recipe to the end first)")
    if prefix:
        found = [v for v in versions if v["hash"].startswith(prefix)]
        if len(found) != 1:
            raise CheckpointError("no single version with this hash" if not found else "ambiguous hash prefix",
                                  file=folder, expected=f"one of {[v['hash'] for v in versions]}", found=prefix)
        version = found[0]
    else:
        version = next((v for v in versions if v["latest"]), versions[-1])
    return {**version, "label": f"{folder.name}@{version['hash'][:8]}"}


def role_task_score(entry: dict, role: str) -> float | None:
    if role == "teachers":
        values = [task_score(t) for t in entry.get("teachers", []) if t]
        return sum(values) / len(values) if values else None
    metrics = entry.get(role)
    return task_score(metrics) if metrics else None


def _view(version: dict, kind: str, variant: str | None) -> tuple[dict, float | None]:
    """A version's per-task entries and GLUE-style score of ``kind`` (a student variant's with ``variant``)."""
    metrics = version["metrics"]
    if variant is None:
        return metrics.get("tasks", {}), scores(metrics)[kind]
    found = (metrics.get("variants") or {}).get(variant)
    if found is None:
        raise RecipeError(f"version {version['label']} has no student variant {variant!r}", path="--model",
                          expected=f"one of {sorted(metrics.get('variants') or {})}" if metrics.get("variants")
                          else "student, control, ensemble or teachers (it lists no student.variants)", found=variant)
    return found["tasks"], found["score"].get(kind)


def compare(specs: list[str], role: str = "student") -> dict:
    kind, colon, variant = role.partition(":")
    if kind not in ROLES or (colon and (not variant or kind not in ("student", "control"))):
        raise RecipeError("unknown model role", path="--model", found=role,
                          expected="student, control, ensemble, teachers, student:VARIANT or control:VARIANT")
    versions = [resolve_version(s) for s in specs]
    views = [_view(v, kind, variant or None) for v in versions]
    tasks = sorted({t for entries, _ in views for t in entries})
    rows = {}
    for t in tasks:
        rows[t] = [role_task_score(entries.get(t, {}), kind) for entries, _ in views]
    rows["GLUE-style"] = [score for _, score in views]
    deltas = {t: [None if (x is None or vals[0] is None) else x - vals[0] for x in vals] for t, vals in rows.items()}
    return {"model": role, "versions": [{"label": v["label"], "hash": v["hash"], "run_dir": v["run_dir"],
                                         "differs": v.get("differs", {})} for v in versions],
            "scores": rows, "deltas": deltas}
