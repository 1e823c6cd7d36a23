"""A trained SST-2 student for the serving benchmark, so that its dev scores mean something.

Fine-tunes MiniLM-L6 (or its first ``layers`` layers) on a fixed-seed SST-2 training subsample with
mtkd's trainer (hard labels, the benchmarks' hyper-parameters except a higher learning rate, bf16), evaluating on the validation
split; the checkpoint is cached under ``benchmarks/out/students/`` and reused when its settings match.

Run: .venv/bin/python benchmarks/trained_student.py --steps 300 [--layers 3]
"""

from __future__ import annotations

import json
from pathlib import Path

import common

SEED = 42
#: high for fine-tuning, so that a few dozen steps on a shared CPU give a real classifier (5e-5 gave 51 % after
#: 40 steps: MiniLM-L6's pooler starts untrained)
LR = 2e-4


def student_dir(*, task: str = "sst2", steps: int, layers: int | None, batch_size: int = 32, lr: float = LR,
                precision: str = "fp32") -> Path:
    tag = f"{task}-{layers or 6}l-{steps}x{batch_size}-lr{lr:g}" + ("" if precision == "fp32" else f"-{precision}")
    return common.OUT_DIR / "students" / tag


def train_student(*, task: str = "sst2", steps: int, layers: int | None, batch_size: int = 32,
                  threads: int = 2, precision: str = "fp32", lr: float = LR) -> Path:
    """The job folder's best checkpoint (trained now unless a finished run with these settings is cached)."""
    from mtkd.plugins import get_registries
    from mtkd.recipe import Training
    from mtkd.training import Job, TaskData, train

    out = student_dir(task=task, steps=steps, layers=layers, batch_size=batch_size, lr=lr, precision=precision)
    result = out / "result.json"
    if not result.exists():
        common.setup_torch(threads)
        t = common.glue_task(task, common.glue_source())
        rows = common.take(t.load_split(t.train_split), steps * batch_size, seed=SEED, what="training rows")
        split = t.eval_splits[0]
        training = Training(sampling={"type": "proportional"}).model_dump(mode="json")
        training.update(batch_size=batch_size, max_steps=steps, epochs=1, lr=lr, weight_decay=0.01, warmup=0.1,
                        grad_clip=1.0, optimizer="adamw", precision=precision, num_threads=threads,
                        save_every=10**9, eval_every="epoch", eval_batch_size=64)
        encoder = {"type": "hf", "model": common.MODEL_ID}
        if layers:
            encoder["num_layers"] = layers
        spec = {"encoder": encoder, "heads": {"default": {"type": "linear", "dropout": 0.1}}}
        objective = get_registries().losses.create("ce", {})
        job = Job(name=out.name, out_dir=out, spec=spec, training=training, seed=SEED,
                  tasks={task: TaskData(t, rows, {split: t.load_split(split)}, objective)}, max_length=128,
                  cache_dir=str(common.OUT_DIR / "students" / "cache"))
        train(job, scaling={"strategy": "auto"})
    res = json.loads(result.read_text())
    model = Path(res["model"])
    return model if model.is_absolute() else out / model


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--task", default="sst2")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--lr", type=float, default=LR)
    args = p.parse_args()
    path = train_student(task=args.task, steps=args.steps, layers=args.layers, threads=args.threads,
                         precision=args.precision, lr=args.lr)
    res = json.loads((path.parent / "result.json").read_text())
    print(f"{path}: dev {res['metrics']}")


if __name__ == "__main__":
    main()
