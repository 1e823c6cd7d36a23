"""bf16 on a CPU without native bf16 (emulated: ~80x slower than fp32) is warned about once, not refused."""

from __future__ import annotations

import pytest
from helpers import pipeline_recipe, requires_minilm, run_cli

from mtkd.strategies import cpu_has_native_bf16, slow_bf16_warning

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512bw avx512vl
"""
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n"
COOPER_LAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


@pytest.mark.parametrize("text, native", [(EPYC, False), (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True),
                                          (GRAVITON3, True), (GRAVITON2, False), ("", None),
                                          ("processor\t: 0\n", None)])
def test_native_bf16_from_the_cpu_flags(text, native):
    assert cpu_has_native_bf16(text) is native


def test_the_warning_names_the_setting_and_the_way_out():
    line = slow_bf16_warning(["training"], cpuinfo=EPYC)
    assert "training.precision" in line and "fp32" in line and "avx512_bf16" in line
    assert slow_bf16_warning(["training"], cpuinfo=SAPPHIRE_RAPIDS) is None
    assert slow_bf16_warning(["training"], cpuinfo="") is None  # cannot be told: no warning
    assert slow_bf16_warning([], cpuinfo=EPYC) is None


@requires_minilm
def test_a_bf16_run_on_this_cpu_warns_once_and_runs(tmp_path):
    """The real /proc/cpuinfo and a real bf16 run: the warning (only where the CPU lacks native bf16) comes
    once per run, however many jobs; the run finishes."""
    training = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "num_threads": 1, "precision": "bf16"}
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 16, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}, {"seed": 2}]}, student=None, training=training)
    result = run_cli("recipe", "run", recipe)
    assert result.exit_code == 0, result.output
    warned = result.output.count("bf16 on a CPU without native bf16")
    assert warned == (1 if cpu_has_native_bf16() is False else 0), result.output
    if warned:
        assert "training.precision" in result.output and "fp32" in result.output
        fp32 = run_cli("recipe", "run", recipe, "--set", "training.precision=fp32")
        assert fp32.exit_code == 0 and "native bf16" not in fp32.output
