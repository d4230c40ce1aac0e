"""benchmarks/gpu_check.py stays runnable: its CPU smoke mode measures and reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_cpu_smoke_mode_measures_every_configuration(capsys):
    rows = _load().main(["--device", "cpu", "--quick"])
    assert [(r["batch"], r["sync_every"]) for r in rows] == [(16, 1), (16, 8), (64, 1), (64, 8)]
    for row in rows:
        assert row["samples_per_second"] > 0 and row["model_seconds"] > 0
        # the signal-to-noise-time sampler spends 46-53 evaluations per sample on the exact-score
        # mixtures of bench gmm at its default tolerance, the x-space one 140-400
        assert 20 < row["score_evals_per_sample"] < 2000
        # the rows evaluated include the frozen ones of a block (and with sync_every > 1 every
        # attempt evaluates its start again, so the samples' own count grows too)
        assert row["rows_evaluated"] >= row["batch"] * (row["score_evals_per_sample"] - 1)
    assert "samples/s" in capsys.readouterr().out


def test_without_a_gpu_it_says_so_and_measures_nothing(capsys):
    if torch.cuda.is_available():
        return  # the measuring path is the one above
    assert _load().main([]) == []
    assert "no CUDA device" in capsys.readouterr().out
