"""The ``adaptive-sde`` command: help texts, the demo and each benchmark's ``--quick`` run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from adaptive_sde._cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000


@pytest.mark.parametrize("argv", [[], ["demo"], ["bench"], ["sample-gmm"]])
def test_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: adaptive-sde" in capsys.readouterr().out


def _rows(out: str, method: str) -> list[list[str]]:
    """The table rows of ``out`` that start with ``method``, split on runs of 2+ spaces."""
    return [
        re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.startswith(method)
    ]


def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["demo", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    # columns: method, settings, strong error, evaluations, time
    euler = {row[1]: row for row in _rows(out, "euler ")}
    gtgf = {row[1]: row for row in _rows(out, "gtgf (sdeint)")}
    assert set(euler) == {"dt = 1/16", "dt = 1/64", "dt = 1/256"}
    for row in (*euler.values(), *gtgf.values()):
        assert math.isfinite(float(row[2])) and float(row[3]) > 0
    coarse = gtgf["rtol 0.1, atol 0.01"]
    # At fewer evaluations than Euler's finest step, gtgf's error is below Euler's finest.
    assert float(coarse[3]) < float(euler["dt = 1/256"][3])
    assert float(coarse[2]) < float(euler["dt = 1/256"][2])
    samplers = _rows(out, "gtgf (sample)") + _rows(out, "euler-maruyama")
    assert len(samplers) == 5 and all(0 <= float(row[3]) <= 1 for row in samplers)
    assert _is_png(tmp_path / "adaptive_sde_demo.png")
    assert str(tmp_path / "adaptive_sde_demo.png") in out


@pytest.mark.parametrize("which", ["analytic", "gmm", "overhead"])
def test_bench_quick(which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    main(["bench", which, "--quick", "--out", str(tmp_path / "out"), "--page", str(page)])
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / f"{which}.json").read_text())
    assert result["quick"] is True and "cpu" in result["machine"]
    assert _is_png(tmp_path / "out" / f"{which}.png")
    assert "![" in page.read_text() and f"]({'out'}/{which}.png)" in page.read_text()
    if which == "analytic":
        gbm = result["results"]["gbm_ito"]
        assert set(gbm) >= {"euler fixed", "srk fixed", "gtgf sdeint", "gtgf per-sample"}
        assert "gbm_ito: evaluations per sample" in out
    elif which == "gmm":
        names = [r["name"] for r in result["results"]]
        assert names == ["2-D ring VP", "2-D ring VE", "64-D VP", "64-D VE"]
        assert "1000-step Euler-Maruyama quality" in out
        # the real libraries' samplers ran beside ours, on every setting (diffusers: VP only)
        for r in result["results"]:
            ran = {row["sampler"] for row in r["rows"]}
            assert {"gtgf snr", "dpm_adaptive eta=1", "dpmpp_2m_sde", "euler-maruyama"} <= ran
            assert ("diffusers sde-dpmsolver++" in ran) == r["name"].endswith("VP")
            assert all(row["evals"] > 0 and row["model_calls"] > 0 for row in r["rows"])
    else:
        assert {(r["batch"], r["d"]) for r in result["rows"]} >= {(1, 1), (4096, 64)}
        assert all(r["gtgf_s"] > 0 and r["euler_s"] > 0 for r in result["rows"])
        assert "euler µs/eval" in out
