"""adaptive_sde._bench.gpu_check stays runnable: its CPU smoke mode measures and reports, and
without a GPU it says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptive_sde._bench import gpu_check


def test_cpu_smoke_mode_measures_every_configuration(tmp_path: Path) -> None:
    result = gpu_check.run(quick=True, device="cpu")
    rows = result["sampler"]
    assert [(r["batch"], r["sync_every"]) for r in rows] == [(16, 1), (16, 8), (64, 1), (64, 8)]
    for row in rows:
        assert row["samples_per_second"] > 0 and row["model_seconds"] > 0
        # the signal-to-noise-time sampler spends 46-53 evaluations per sample on the exact-score
        # mixtures of bench gmm at its default tolerance, the x-space one 140-400
        assert 20 < row["score_evals_per_sample"] < 2000
        # the rows evaluated include the frozen ones of a block (and with sync_every > 1 every
        # attempt evaluates its start again, so the samples' own count grows too)
        assert row["rows_evaluated"] >= row["batch"] * (row["score_evals_per_sample"] - 1)
        assert row["host_syncs"] == -1  # counted on CUDA only
    # the overhead measurements ran on the same device
    assert result["overhead"]["device"] == "cpu"
    assert len(result["overhead"]["evaluations"]) == len(gpu_check.overhead.QUICK_SIZES)
    tables = gpu_check.tables(result)
    assert "samples/s" in tables[0][1] and len(tables) == 4
    png = gpu_check.plot(result, tmp_path / "gpu_check.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_without_a_gpu_it_says_so_and_measures_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the measuring path is the one above")
    result = gpu_check.run()
    assert result["device"] is None and result["sampler"] == [] and result["overhead"] is None
    ((_, note),) = gpu_check.tables(result)
    assert "no CUDA device" in note
    assert gpu_check.plot(result, tmp_path / "note.png").read_bytes()[:4] == b"\x89PNG"
    assert gpu_check.main(["--out", str(tmp_path / "out")])["device"] is None
    assert "no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written
