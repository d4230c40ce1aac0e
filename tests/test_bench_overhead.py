"""``adaptive-sde bench overhead`` in its quick mode: the structure of its result, exact
evaluation counts, finite ratios with their ranges. Nothing about speed (machines are noisy)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from adaptive_sde import BrownianRegister
from adaptive_sde._bench import overhead
from adaptive_sde._bench.report import load_json, save_json

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return overhead.run(quick=True)


def _timing_ok(timing: dict[str, float]) -> None:
    assert 0 < timing["q25"] <= timing["median"] <= timing["q75"]
    assert timing["iqr"] == pytest.approx(timing["q75"] - timing["q25"])
    assert timing["iqr"] >= 0 and timing["runs"] >= overhead.QUICK_MIN_RUNS


def _range_ok(r: dict[str, float]) -> None:
    """A ratio (or overhead) with its range: finite, positive, the median inside."""
    for key in ("median", "low", "high"):
        assert math.isfinite(r[key]) and r[key] > 0, r
    assert r["low"] <= r["median"] <= r["high"]


def test_every_method_at_every_size(result: dict[str, Any]) -> None:
    sizes = [(r["batch"], r["d"]) for r in result["evaluations"]]
    assert sizes == list(overhead.QUICK_SIZES)
    assert result["steps"] == {
        "euler": overhead.QUICK_STEPS,
        "srk": overhead.QUICK_STEPS // 8,
        "gtgf fixed": overhead.QUICK_STEPS // 2,
    }
    for row in result["evaluations"]:
        assert tuple(row["methods"]) == overhead.METHODS
        _timing_ok(row["fg"])
        _timing_ok(row["interval_construct"])
        for name, m in row["methods"].items():
            _timing_ok(m["call"])
            _range_ok(m["per_eval"])
            _range_ok(m["overhead"])
            assert m["overhead"]["median"] < m["per_eval"]["median"]
            for base in overhead.BASELINES:
                _range_ok(row["ratios"][name][base])
            assert row["ratios"][name]["euler"]["median"] == pytest.approx(
                m["overhead"]["median"] / row["methods"]["euler"]["overhead"]["median"]
            )
        assert row["ratios"]["euler"]["euler"]["median"] == pytest.approx(1.0)


def test_evaluation_counts_are_exact(result: dict[str, Any]) -> None:
    n = overhead.QUICK_STEPS
    for row in result["evaluations"]:
        m = row["methods"]
        for counted in m.values():  # every method evaluates f and g in pairs
            assert counted["f_calls"] == counted["g_calls"] == counted["pairs"]
        # torchsde's contract check evaluates f and g once before the first step
        assert m["euler"]["pairs"] == n + 1
        assert m["srk"]["pairs"] == 10 * (n // 8) + 1  # SRID2: 1 + 2 + 3 + 4 a step
        assert m["gtgf sdeint fixed"]["pairs"] == 2 * (n // 2) + 1
        # solve's first evaluation serves the first step: 2 a step, nothing more
        assert m["gtgf solve fixed"]["pairs"] == 2 * (n // 2)
        assert m["gtgf solve fixed"]["nfe"] == m["gtgf solve fixed"]["pairs"]
        # per-sample steps: the rows evaluated are the samples' own evaluations
        adaptive = m["gtgf solve"]
        assert adaptive["nfe"] == pytest.approx(adaptive["pairs"])
        # one grid: every evaluation is of the whole batch
        assert float(m["gtgf sdeint"]["pairs"]).is_integer() and m["gtgf sdeint"]["nfe"] is None
        for counted in m.values():  # comparable numbers of evaluations per solve
            assert n / 2 <= counted["pairs"] <= 6 * n


def test_generator_against_randn(result: dict[str, Any]) -> None:
    rows = result["generator"]
    assert [(r["n"], r["size"]) for r in rows] == list(overhead.QUICK_GENERATOR_SIZES)
    for r in rows:
        _timing_ok(r["randn"])
        _timing_ok(r["normals"])
        _range_ok(r["ratio"])


def test_register_against_randn_and_the_interval(result: dict[str, Any]) -> None:
    rows = result["register"]
    assert [(r["batch"], r["m"], r["case"]) for r in rows] == [
        (b, m, case)
        for b, m in overhead.QUICK_REGISTER_SIZES
        for case in ("accepted", "rejections")
    ]
    for r in rows:
        assert r["attempts"] == overhead.QUICK_STEPS
        if r["case"] == "accepted":
            assert r["rejected_share"] == 0
        else:
            assert 0.2 < r["rejected_share"] < 0.45
        for key in ("randn", "register_construct", "register_sweep"):
            _timing_ok(r[key])
        for key in ("interval_construct", "interval_sweep"):
            _timing_ok(r[key])
        for key in ("register_vs_randn", "interval_vs_randn", "register_vs_interval"):
            _range_ok(r[key])


def test_tables_json_and_plot(result: dict[str, Any], tmp_path: Path) -> None:
    tables = overhead.tables(result)
    assert len(tables) == 3
    text = "\n".join(t for _, t in tables)
    for name in (*overhead.METHODS, "f + g alone", "accepted", "rejections"):
        assert name in text
    assert all(t.startswith("|") for _, t in overhead.tables(result, markdown=True))
    loaded = load_json(save_json(tmp_path / "overhead.json", result))
    assert loaded["evaluations"][0]["methods"]["euler"]["pairs"] == overhead.QUICK_STEPS + 1
    assert "cpu" in loaded["machine"] and loaded["timer"].startswith("torch.utils.benchmark")
    png = overhead.plot(loaded, tmp_path / "overhead.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratio_range() -> None:
    num = {"median": 2.0, "low": 1.0, "high": 3.0}
    den = {"median": 1.0, "q25": 0.5, "q75": 2.0}
    assert overhead.ratio(num, den) == {"median": 2.0, "low": 0.5, "high": 6.0}
    assert overhead.ratio(num, {"median": 1.0, "low": 0.0, "high": 1.0})["high"] == math.inf


def test_recorded_attempts_replay_as_the_loop_drives_the_register() -> None:
    """The replayed sequence finds the register as recorded: the depth the loop's read would
    give, and each attempt ending at or before the horizon."""
    sequence, share = overhead.attempts(8, 3, 40, overhead.REJECTED, CPU)
    assert 0 < share < 1
    register = BrownianRegister(8, 3, seed=0)
    for t, t_next, accept, depth in sequence:
        assert int(register.depth_probe()) == depth
        register.reserve(1, depth)
        assert bool((t_next <= register.horizon(None, t)).all() and (t_next > t).all())
        register.increment(None, t, t_next)
        register.commit(None, accept)


def test_the_sde_is_cheap_and_counts_rows() -> None:
    sde = overhead.Counting(4, 2, CPU)
    y = torch.ones(3, 2)
    assert sde.g(None, y).shape == (3, 2) and torch.equal(sde.f(None, y), -y)  # type: ignore[arg-type]
    assert (sde.f_rows, sde.g_rows) == (3, 3)
    assert sde.g(None, torch.ones(4, 2)) is sde.g_value  # type: ignore[arg-type]
