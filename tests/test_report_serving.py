"""The report's serving table: a row per model and format, dev scores only where they belong."""

from __future__ import annotations

from mtkd.report import serving_lines


def cost(ex_s: float, params: int = 1000, size: int = 2_000_000) -> dict:
    return {"parameters": params, "size_bytes": size,
            "batch_1": {"examples_per_s": ex_s, "p50_ms": 1.0, "p95_ms": 2.0},
            "batch_8": {"examples_per_s": 4 * ex_s, "p50_ms": 3.0, "p95_ms": 4.0}}


def test_rows_for_variants_and_formats():
    shared = cost(200.0, params=500)
    serving = {"task": "rte", "split": "validation", "examples": 16,
               "ensemble": {**cost(50.0, params=3000), "members": 3}, "student": cost(100.0),
               "variants": {"l6": cost(100.0), "l3": shared, "l3-hidden": shared},
               "dev_scores": {"ensemble": 70.0, "student": 65.5},
               "formats": {"int8": {**cost(400.0, size=500_000), "dev_score": 65.0,
                                    "dev": {"score": 65.0, "score_change": -0.5}},
                           "onnx": {"error": "cannot export: a SANHead"}}}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in serving_lines(serving) if line.startswith("| ")}
    assert set(rows) == {"model", "ensemble (3 members)", "student l6", "student l3", "student l3-hidden",
                         "student l6 (int8)", "student l6 (onnx)"}
    assert rows["ensemble (3 members)"] == "| ensemble (3 members) | 3,000 | 2.0 | 70.00 | 50.0, 1.0, 2.0 | 200.0, 3.0, 4.0 |"
    assert "| 65.50 |" in rows["student l6"]  # the first variant is the student
    assert "| – |" in rows["student l3"] and "| – |" in rows["student l3-hidden"]  # shared cost, not a shared score
    assert rows["student l6 (int8)"].startswith("| student l6 (int8) | 1,000 | 0.5 | 65.00 (-0.50) | 400.0, 1.0, 2.0")
    assert rows["student l6 (onnx)"].startswith("| student l6 (onnx) | not measured: cannot export: a SANHead |")
    assert serving_lines(None) == []
