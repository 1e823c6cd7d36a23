"""`mtkd recipe run --nproc N` whose workers stop on bad input: the user reads mtkd's message once, exit code 2,
and none of torchrun's traceback or failure table."""

from __future__ import annotations

import shutil
import sys

import pytest
from helpers import GLUE_SAMPLE, mtkd_env, pipeline_recipe, requires_minilm, run_mtkd

pytestmark = [requires_minilm, pytest.mark.skipif(sys.platform == "win32", reason="gloo workers")]


@pytest.mark.slow  # two worker processes: ~12 s
def test_workers_bad_input_is_one_clean_message(tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(GLUE_SAMPLE, glue)
    with open(glue / "RTE" / "dev.tsv", "a", encoding="utf-8") as f:
        f.write("999\tonly\ttwo\n")  # found by the workers when they load the data, after the relaunch
    recipe = pipeline_recipe(tmp_path, data={"glue": str(glue), "max_length": 32},
                             tasks=[{"name": "rte", "max_train_examples": 16, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}]}, student=None)
    done = run_mtkd(["recipe", "run", recipe, "--nproc", "2", "-q"], env=mtkd_env(OMP_NUM_THREADS="1"), timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert out.count("bad row: 3 columns instead of 4") == 1, out  # once, not once per rank
    assert f"Error in {glue / 'RTE' / 'dev.tsv'}: line" in out
    for noise in ("Traceback", "ChildFailedError", "FAILED", "exitcode", "closing signal"):
        assert noise not in out, out


def test_the_filter_drops_only_torchruns_lines_about_mtkd_exits():
    import logging

    from mtkd.torchrun import _QuietMtkdExits

    quiet = _QuietMtkdExits()

    def record(msg, *args):
        return logging.LogRecord("torch", logging.ERROR, __file__, 1, msg, args, None)

    failed = "failed (exitcode: %s) local_rank: %s (pid: %s) of binary: %s"
    assert not quiet.filter(record(failed, 2, 0, 1, "python"))
    assert not quiet.filter(record("Sending process %s closing signal %s", 12, "SIGTERM"))
    assert quiet.filter(record(failed, 1, 0, 1, "python"))  # a crash (a bug): torchrun's report stays
    assert quiet.filter(record("something else %s", 2))
