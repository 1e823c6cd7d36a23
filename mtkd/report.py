"""The report of a run: a metrics dictionary (``metrics.json``) rendered as markdown or a rich table.

Rendering only: the figures come from the evaluate stage (``mtkd.stages.evaluate.build_metrics``).
"""

from __future__ import annotations

from pathlib import Path

from .scores import mean_std, task_score


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    m, s = mean_std(values)
    return f"{m:.2f}" if len(values) == 1 else f"{m:.2f} ± {s:.2f}"


def report_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Rows of the comparison table: one per task (its score) and the GLUE-style score."""
    k = len(metrics["teacher_names"])
    names = list(metrics.get("teacher_names") or [])
    header = ["task"] + [names[i] if i < len(names) else f"teacher-{i}" for i in range(k)] + (["teachers"] if k else [])
    any_task = next(iter(metrics["tasks"].values()), {})
    if "ensemble" in any_task:
        header.append("ensemble")
    if "control" in any_task:
        header.append("control")
    if "student" in any_task:
        header.append("student")
    rows = []
    for task, e in metrics["tasks"].items():
        ts = [task_score(t) for t in e["teachers"] if t]
        row = [task] + [f"{v:.2f}" for v in ts] + ([_fmt(ts)] if k else [])
        if "ensemble" in any_task:
            row.append(f"{task_score(e['ensemble']):.2f}" if e.get("ensemble") else "—")
        if "control" in any_task:
            row.append(_fmt([task_score(c) for c in e.get("controls", []) if c]))
        if "student" in any_task:
            row.append(_fmt([task_score(c) for c in e.get("students", []) if c]))
        rows.append(row)
    s = metrics["score"]
    row = ["GLUE-style"] + [f"{v:.2f}" for v in s.get("teachers", [])] + ([_fmt(s["teachers"])] if k else [])
    if "ensemble" in any_task:
        row.append(f"{s['ensemble']:.2f}")
    if "control" in any_task:
        row.append(_fmt(s.get("controls", [])))
    if "student" in any_task:
        row.append(_fmt(s.get("students", [])))
    rows.append(row)
    return header, rows


def _detail_rows(metrics: dict) -> list[str]:
    lines = ["| task | metric | teachers | ensemble | control | student |", "|---|---|---|---|---|---|"]
    for task, e in metrics["tasks"].items():
        names = next((list(x) for x in [e.get("ensemble"), e.get("student")] + e["teachers"] if x), [])
        for metric in names:
            teachers = ", ".join(f"{t[metric]:.2f}" for t in e["teachers"] if metric in t) or "—"
            ens = f"{e['ensemble'][metric]:.2f}" if e.get("ensemble") else "—"
            ctl = _fmt([c[metric] for c in e.get("controls", []) if metric in c])
            stu = _fmt([c[metric] for c in e.get("students", []) if metric in c])
            lines.append(f"| {task} | {metric} | {teachers} | {ens} | {ctl} | {stu} |")
    return lines


def _interval(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{d['delta']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def _interval3(d: dict | None) -> str:
    """A calibration delta (a fraction, not points) with its interval."""
    if not d:
        return "—"
    return f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def evidence_lines(metrics: dict) -> list[str]:
    """The deltas with their intervals, the seed spread, calibration, the selection split and the plots."""
    comp = metrics.get("comparison") or {}
    lines: list[str] = []
    sc, se = comp.get("student_vs_control"), comp.get("student_vs_ensemble")
    if sc or se:
        m = comp["method"]
        lines += ["", f"## What distillation changed ({int(m['confidence'] * 100)} % paired bootstrap over dev examples)",
                  ""]
        if comp.get("sentence"):
            lines += [f"**{comp['sentence']}**", ""]
        tasks = list((sc or se)["tasks"])
        lines += ["| task | student − control | student − ensemble |", "|---|---|---|"]
        for t in tasks:
            lines.append(f"| {t} | {_interval((sc or {}).get('tasks', {}).get(t))} | "
                         f"{_interval((se or {}).get('tasks', {}).get(t))} |")
        lines.append(f"| **GLUE-style** ({', '.join(m['score_tasks'])}) | {_interval((sc or {}).get('score'))} | "
                     f"{_interval((se or {}).get('score'))} |")
        per_seed = (sc or {}).get("score", {}).get("per_seed")
        if per_seed:
            lines += ["", "Student − control GLUE-style score per seed: " + "; ".join(
                f"seed {seed} {_interval(d)}" for seed, d in zip(sc["seeds"], per_seed)) + "."]
        lines += ["", f"Method: {m['resamples']} resamples; {m['unit']}."]
    spread = comp.get("seed_spread") or {}
    if spread:
        lines += ["", "Seed spread of the GLUE-style score: " + "; ".join(
            f"{who} {v['score']['mean']:.2f} ± {v['score']['std']:.2f} (min {v['score']['min']:.2f}, "
            f"max {v['score']['max']:.2f}, seeds {', '.join(str(s) for s in v['seeds'])})" for who, v in spread.items())
            + "."]
    cal = comp.get("calibration") or {}
    if cal:
        models = list(cal)
        tasks = sorted({t for per in cal.values() for t in per})
        lines += ["", "## Calibration (classification tasks; lower is better)", "",
                  "ECE / Brier score. " + comp["method"]["calibration"] + ".", "",
                  "| task | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for t in tasks:
            cells = [f"{cal[m][t]['ece']:.3f} / {cal[m][t]['brier']:.3f}" if t in cal[m] else "—" for m in models]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    deltas = comp.get("calibration_deltas") or {}
    if deltas:
        pairs = list(deltas)
        lines += ["", "Student − other in " + comp["method"].get("calibration_deltas", "ECE and Brier score") + ":", "",
                  "| task | " + " | ".join(f"{p.removeprefix('student_vs_')}: ECE | Brier" for p in pairs) + " |",
                  "|---|" + "---|---|" * len(pairs)]
        for t in sorted({t for per in deltas.values() for t in per}):
            cells = [f"{_interval3(deltas[p].get(t, {}).get('ece'))} | {_interval3(deltas[p].get(t, {}).get('brier'))}"
                     for p in pairs]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += search_lines(metrics)
    sel = metrics.get("selection")
    if sel:
        lines += ["", "## Which split chose what", "", sel["note"] + "."]
        for t, c in (sel.get("tasks") or {}).items():
            # How coarse the choice is (a carve holds at least one row); a later checkpoint must score higher.
            lines.append(f"- {t}: {c['holdout_rows']} holdout rows ({c['fraction']:.0%} of the training split, "
                         f"fingerprint `{c['fingerprint']}`), {c['train_rows']} rows left to train on; one holdout "
                         f"example moves an accuracy by {100 / c['holdout_rows']:.2f} points, and checkpoints that "
                         "tie keep the earlier one")
    transfer = metrics.get("transfer")
    if transfer:
        lines += ["", "## Transfer sets (inputs without labels, labelled by the teachers for the student only)", ""]
        for t, c in transfer.items():
            lines.append(f"- {t}: {c['rows']:,} inputs from its `{c['split']}` split, labels removed ({c['read']:,} "
                         f"read, {c['dropped_overlap']:,} dropped: their text is trained on, held out or in a dev "
                         f"split; fingerprint `{c['fingerprint'][:16]}`)")
    plots = metrics.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return lines


def _megabytes(size) -> str:
    return f"{size / 1e6:,.1f}" if isinstance(size, (int, float)) else "–"


def serving_lines(serving: dict | None) -> list[str]:
    """The serving-cost table: the ensemble, the eager student and each other format of the student
    (``evaluation.serving_formats``): parameters, size on disk, dev score of the timed task, throughput
    and latency per batch size."""
    if not serving:
        return []
    batches = [k for k in serving["student"] if k.startswith("batch_")]
    lines = ["", f"## Serving cost ({serving['task']} {serving['split']}, {serving['examples']} examples)", "",
             f"Dev score: {serving['task']}'s score on its dev split (x100); for a converted format, its change from "
             "the checkpoint in brackets.", "",
             "| model | parameters | size MB | dev score | "
             + " | ".join(f"batch {k.split('_')[1]}: ex/s, p50 ms, p95 ms" for k in batches) + " |",
             "|---|---|---|---|" + "---|" * len(batches)]

    def score(row, value) -> str:
        if value is None:
            return "–"
        change = (row.get("dev") or {}).get("score_change")
        return f"{value:.2f}" + (f" ({change:+.2f})" if change is not None else "")

    dev = serving.get("dev_scores") or {}
    rows = [(f"ensemble ({serving['ensemble']['members']} members)", serving["ensemble"], dev.get("ensemble"))]
    student = "student"
    if serving.get("variants"):  # eager PyTorch; the first variant is the student the formats are made from
        rows += [(f"student {n}", r, dev.get("student") if i == 0 else None)
                 for i, (n, r) in enumerate(serving["variants"].items())]
        student = f"student {next(iter(serving['variants']))}"
    else:
        rows.append(("student (eager)", serving["student"], dev.get("student")))
    rows += [(f"{student} ({fmt})", row, row.get("dev_score")) for fmt, row in (serving.get("formats") or {}).items()]
    for label, row, value in rows:
        if "error" in row:
            lines.append(f"| {label} | not measured: {row['error']} |" + " |" * (2 + len(batches)))
            continue
        cells = [f"{row[k]['examples_per_s']:.1f}, {row[k]['p50_ms']:.1f}, {row[k]['p95_ms']:.1f}" if k in row
                 else "–" for k in batches]
        lines.append(f"| {label} | {row['parameters']:,} | {_megabytes(row.get('size_bytes'))} | {score(row, value)} | "
                     + " | ".join(cells) + " |")
    return lines


def describe_setting(setting: dict) -> str:
    """``epochs=3, lr=0.0001``: a searched training setting."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items())


def search_sentence(search: dict) -> str:
    roles = list(search["roles"])
    who = ("Student and control each" if roles == ["student", "control"] else
           f"Each of {', '.join(roles)}" if len(roles) > 1 else f"The {roles[0]}")
    return (f"{who} tried the same {search['settings']} training setting(s) ({', '.join(search['fields'])}) "
            f"with the same trial seeds ({', '.join(map(str, search['trial_seeds']))}), chosen on the holdout "
            "(mean selection score over the trial seeds, a tie to the setting listed first). The reported figures "
            f"come from fresh confirmation seeds ({', '.join(map(str, search['confirmation_seeds']))}) on dev, which "
            "no choice consulted.")


def search_lines(metrics: dict) -> list[str]:
    """The training-budget search (every tried setting, its holdout score, the choice) and the budget check."""
    lines: list[str] = []
    search = metrics.get("search")
    if search and search.get("roles"):
        roles = list(search["roles"])
        lines += ["", "## Training-budget search (chosen on the holdout)", "", search_sentence(search), "",
                  "| setting | " + " | ".join(f"{r} (holdout" + (": mean (each trial seed))" if len(
                      search["trial_seeds"]) > 1 else ")") for r in roles) + " |",
                  "|---|" + "---|" * len(roles)]
        first = search["roles"][roles[0]]["trials"]
        for i, row in enumerate(first):
            cells = []
            for r in roles:
                t = search["roles"][r]["trials"][i]
                cell = f"{t['score']:.2f}" + (f" ({', '.join(f'{x:.2f}' for x in t['scores'])})"
                                              if len(t["scores"]) > 1 else "")
                cells.append(f"**{cell} chosen**" if t["chosen"] else cell)
            lines.append(f"| {describe_setting(row['setting'])} | " + " | ".join(cells) + " |")
        held = [(r, search["roles"][r].get("confirmations")) for r in roles]
        held = [(r, c) for r, c in held if c]
        if held:
            lines += ["", "The confirmation seeds on the holdout (the checkpoints they kept there; chosen on it, so "
                      "optimistic alike), to set beside their dev figures: " + "; ".join(
                          f"{r} " + ", ".join(f"{c['score']:.2f}" for c in rows) +
                          f" (mean {sum(c['score'] for c in rows) / len(rows):.2f})" for r, rows in held) + "."]
    budget = metrics.get("budget")
    if budget:
        n = budget["examples"]
        parts = ["teachers " + ", ".join(f"{k} {v:g}" for k, v in budget["teachers"].items())]
        parts += [f"{r} {budget[r]:g}" for r in ("student", "control") if r in budget]
        lines += ["", f"Training budget in epochs (× {n:,} training examples): " + "; ".join(parts) + "."]
        lines += [f"**Warning**: {w}." for w in budget.get("warnings", [])]
    return lines


def headline_note(metrics: dict) -> str:
    """Which tasks the headline GLUE-style score averages (and which are reported but left out)."""
    chosen = metrics.get("score_tasks") or list(metrics.get("tasks", {}))
    left = [t for t in metrics.get("tasks", {}) if t not in chosen]
    return (f"The GLUE-style score averages {', '.join(chosen)}"
            + (f"; {', '.join(left)} {'is' if len(left) == 1 else 'are'} reported but not averaged" if left else "")
            + ".")


def _mean_pm(mean, std) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f}" if not std else f"{mean:.2f} ± {std:.2f}"


def frontier_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The frontier table: one row per student variant (``metrics["frontier"]``)."""
    fr = metrics["frontier"]
    speed = f"ex/s (batch {fr['batch_size']})" if fr["axis"] == "examples_per_s" else "ex/s"
    header = ["variant", "params", speed, "student", "control", "student − control",
              "student − sibling", "frontier"]
    rows = []
    for r in fr["variants"]:
        rows.append([r["variant"], f"{r['parameters'] / 1e6:.2f} M",
                     f"{r['examples_per_s']:.1f}" if r["examples_per_s"] else "—",
                     _mean_pm(r["student"], r["student_std"]), _mean_pm(r["control"], r["control_std"])
                     + (f" ({r['control_of']}'s)" if r.get("control_of", r["variant"]) != r["variant"] else ""),
                     _interval(r["student_minus_control"]),
                     f"{_interval(r['student_minus_variant'])} ({r['student_minus_variant']['variant']}'s)"
                     if r.get("student_minus_variant") else "—",
                     "yes" if r["pareto"] else ""])
    return header, rows


def frontier_lines(metrics: dict) -> list[str]:
    if not metrics.get("frontier"):
        return []
    fr = metrics["frontier"]
    cost = (f"serving examples/s at batch {fr['batch_size']}" if fr["axis"] == "examples_per_s"
            else "the parameter count (serving was not measured for every variant)")
    header, rows = frontier_rows(metrics)
    lines = ["", "## Compression frontier (student variants)", "",
             "Each variant is trained for every seed with its control (the variant's set-up on hard labels only; "
             "variants that differ only in the soft objective share it). GLUE-style scores ± std over seeds; "
             "student − control with its 95 % paired bootstrap interval; student − sibling: where a variant "
             "shares its control with another (they differ only in the soft objective), its students against "
             "that variant's, paired by seed, with the same bootstrap: the objective's own effect. `frontier`: "
             f"no other variant is at least as good and at least as cheap, and better in one (cost: {cost}). "
             "The first variant is the student of the tables above.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    variants = metrics.get("variants") or {}
    tasks = sorted({t for v in variants.values() for t in v["tasks"]})
    if tasks:
        cols = [(n, k) for n, v in variants.items() for k in ("student", "control") if v["score"].get(k) is not None
                and (k == "student" or v.get("control_of", n) == n)]  # a shared control once
        lines += ["", "Per task (mean over seeds):", "", "| task | " + " | ".join(f"{n} {k}" for n, k in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for t in tasks:
            cells = []
            for n, k in cols:
                m = variants[n]["tasks"].get(t, {}).get(k)
                cells.append(f"{task_score(m):.2f}" if m else "—")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += _variant_calibration_lines(variants)
    return lines


def _variant_calibration_lines(variants: dict) -> list[str]:
    """Each variant's change in ECE against its control (and the same-control variant's student), with intervals."""
    cols = []
    for n, v in variants.items():
        deltas = (v.get("comparison") or {}).get("calibration_deltas") or {}
        other = ((v.get("comparison") or {}).get("student_vs_variant") or {}).get("variant")
        cols += [(f"{n} − control", deltas["student_vs_control"])] if "student_vs_control" in deltas else []
        cols += [(f"{n} − {other}", deltas["student_vs_variant"])] if "student_vs_variant" in deltas else []
    if not cols:
        return []
    lines = ["", "Change in ECE per variant (student − control, and against the student of the variant whose control "
             "it shares; 95 % bias-corrected paired bootstrap interval; negative is better calibrated):", "",
             "| task | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for t in sorted({t for _, d in cols for t in d}):
        lines.append(f"| {t} | " + " | ".join(_interval3(d.get(t, {}).get("ece")) for _, d in cols) + " |")
    return lines


def render_markdown(metrics: dict, recipe_name: str, recipe_hash: str) -> str:
    header, rows = report_rows(metrics)
    lines = [f"# mtkd report: {recipe_name}", "", f"Recipe hash `{recipe_hash}`. Scores on the leaderboard's x100 "
             "scale; a task's score is the mean of its metrics. The teachers go by their names, `teachers` is their mean ± std; "
             "`ensemble` aggregates them as the soft targets do; `control` is the student's exact set-up trained on hard "
             "labels only; `student` is distilled (± over seeds). " + headline_note(metrics),
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += evidence_lines(metrics)
    lines += frontier_lines(metrics)
    lines += ["", "## Every metric", ""] + _detail_rows(metrics)
    lines += serving_lines(metrics.get("serving"))
    lines += compute_lines(metrics.get("compute"))
    if metrics.get("timings"):
        lines += ["", "## Wall time of the invocation that evaluated (stages it reused take ~0 s)", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in metrics["timings"].items()]
    return "\n".join(lines) + "\n"


def compute_lines(compute: dict | None) -> list[str]:
    """What each stage cost, over every unit this version uses, made in this run or an earlier one."""
    if not compute:
        return []
    lines = ["", "## Compute per stage (every unit this version uses, made in this run or reused)", "",
             "Training jobs: their `train_seconds` (summed over resumes); other units: the wall time of the run that "
             "completed them.", "", "| stage | units | seconds | each |", "|---|---|---|---|"]
    unknown = 0
    for stage, c in compute.items():
        digits = 0 if c["min"] is not None and c["max"] >= 10 else 1  # a sub-second unit is not "0 s"
        each = f"{c['min']:,.{digits}f}–{c['max']:,.{digits}f} s" if c["min"] is not None else "—"
        known = c["units"] - c["unknown"]
        lines.append(f"| {stage} | {c['units']} | {c['seconds']:,.1f}"
                     + (f" ({known} of {c['units']})" if c["unknown"] else "") + f" | {each} |")
        unknown += c["unknown"]
    if unknown:
        lines += ["", f"{unknown} unit(s) were made before mtkd recorded their time and are not counted."]
    return lines


def rich_table(metrics: dict, recipe_name: str):
    from rich.table import Table

    header, rows = report_rows(metrics)
    table = Table(title=f"{recipe_name}: dev scores (x100)",
                  caption="control = same set-up on hard labels only; student = distilled; ± over members/seeds. "
                          + headline_note(metrics))
    for h in header:
        table.add_column(h, justify="left" if h == "task" else "right")
    for r in rows:
        table.add_row(*r)
    return table


def print_report(metrics: dict, recipe_name: str, console) -> None:
    """The table, and the serving cost in one line, on ``console``."""
    console.print(rich_table(metrics, recipe_name))
    sentence = (metrics.get("comparison") or {}).get("sentence")
    if sentence:
        console.print(sentence, highlight=False)
    search = metrics.get("search")
    if search and search.get("roles"):
        chosen = "; ".join(f"{r} chose {describe_setting(t['chosen'])} "
                           f"({next(x['score'] for x in t['trials'] if x['chosen']):.2f} on the holdout)"
                           for r, t in search["roles"].items())
        console.print(f"search: {chosen}. {search_sentence(search)}", highlight=False)
    from rich.markup import escape

    for warning in (metrics.get("budget") or {}).get("warnings", []):
        console.print(f"[yellow]warning: {escape(warning)}[/]", highlight=False)
    if metrics.get("frontier"):
        from rich import box
        from rich.table import Table

        header, rows = frontier_rows(metrics)
        # A light box and each column at least its longest word wide: at 80 columns the figures wrap, not "…".
        frontier = Table(title="compression frontier: student variants (GLUE-style, x100)", box=box.SIMPLE_HEAD,
                         pad_edge=False, collapse_padding=True,
                         caption="student − control: 95 % paired bootstrap interval; student − sibling: against "
                                 "the students of the variant whose control it shares (only the objective "
                                 "differs); frontier: on the quality/speed Pareto frontier")
        for i, h in enumerate(header):
            frontier.add_column(h, justify="left" if h == "variant" else "right",
                                min_width=max(len(w) for text in [h] + [r[i] for r in rows] for w in text.split()))
        for r in rows:
            frontier.add_row(*r)
        console.print(frontier)
    serving = metrics.get("serving")
    if serving:
        e, s = serving["ensemble"], serving["student"]
        bs = max(int(k.split("_")[1]) for k in s if k.startswith("batch_"))
        console.print(f"serving: ensemble {e['parameters']:,} params, student {s['parameters']:,}; "
                      f"batch {bs}: {e[f'batch_{bs}']['examples_per_s']:.1f} vs "
                      f"{s[f'batch_{bs}']['examples_per_s']:.1f} examples/s"
                      + "".join(f"; student {fmt} {row[f'batch_{bs}']['examples_per_s']:.1f}"
                                for fmt, row in (serving.get("formats") or {}).items() if f"batch_{bs}" in row),
                      highlight=False)
