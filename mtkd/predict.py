"""Submission files for the test splits, from the trained student or the teacher ensemble."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError


def write_predictions(recipe, *, which: str = "student", output=None, out_dir: Path | None = None) -> Path:
    from .data import tokenize_split
    from .inference import predict_logits
    from .model import load_model
    from .pipeline import _aggregator, _member_scores, load_tasks, run_dir_for
    from .training import model_dir, to_predictions

    run_dir = run_dir_for(recipe, output)
    ev_path = run_dir / "evaluation.json"
    if not ev_path.exists():
        raise CheckpointError("this recipe has not been run to the end yet", file=run_dir,
                              hint=f"run `mtkd recipe run {recipe.file}` first")
    ev = json.loads(ev_path.read_text())
    if which == "student":
        if not ev.get("student_models"):
            raise CheckpointError("the run has no student", file=run_dir)
        model_dirs = [Path(ev["student_models"][0])]
    else:
        from .pipeline import RunContext, plan_members

        ctx = RunContext(recipe, run_dir, load_tasks(recipe), None)
        members = plan_members(ctx)
        model_dirs = [m.checkpoint or model_dir(run_dir / "teachers" / m.hash,
                                                json.loads((run_dir / "teachers" / m.hash / "result.json").read_text()))
                      for m in members]
        for m, d in zip(members, model_dirs):
            m.model_dir = d  # member_logits loads it if its dev logits are not stored
        if not model_dirs:
            raise CheckpointError("the recipe has no teachers", file=recipe.file, path="teachers")
    tasks = load_tasks(recipe) if which == "student" else ctx.tasks
    models = [load_model(d).eval() for d in model_dirs]
    out_dir = Path(out_dir or run_dir / f"submission-{which}")
    out_dir.mkdir(parents=True, exist_ok=True)
    r = recipe.resolved
    written: list[Path] = []
    for name, tb in tasks.items():
        if not tb.task.test_splits:
            continue
        preds, indices = {}, {}
        for split in tb.task.test_splits:
            ds = tb.task.load_split(split)
            outputs = []
            for model in models:
                tok = tokenize_split(tb.task, split, model.encoder.tokenizer, max_length=r["data"]["max_length"],
                                     cache_dir=r["data"]["cache_dir"], dataset=ds)
                outputs.append(predict_logits(model, tb.task.head_task or name, tok,
                                              batch_size=r["training"]["eval_batch_size"],
                                              pad_token_id=model.encoder.tokenizer.pad_token_id or 0,
                                              precision=r["training"]["precision"]))
            if len(outputs) > 1:
                agg = _aggregator(recipe, tb.task)
                weights = None
                if getattr(agg, "uses_member_scores", False):  # weighted by dev score, as in the soft targets
                    scores = _member_scores(ctx, members, name)
                    weights = torch.tensor(scores, dtype=torch.float32) if scores is not None else None
                targets = agg(torch.from_numpy(np.stack(outputs)).float(), weights=weights).numpy()
            else:
                targets = outputs[0]
            preds[split] = to_predictions(targets, tb.task.task_type)
            indices[split] = np.asarray(ds["idx"])
        written += [Path(p) for p in tb.task.write_submission(preds, indices, out_dir)]
    zip_path = out_dir.with_suffix(".zip")
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in written:
            zf.write(p, arcname=p.name)
    tmp.replace(zip_path)
    return zip_path
