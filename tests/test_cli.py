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
    coarse, fine = gtgf["rtol 0.1, atol 0.01"], gtgf["rtol 0.01, atol 0.001"]
    # At fewer evaluations than Euler's finest step, gtgf's error is below Euler's finest; at
    # no more than Euler's coarsest, below half of Euler's coarsest.
    assert float(fine[3]) < float(euler["dt = 1/256"][3])
    assert float(fine[2]) < float(euler["dt = 1/256"][2])
    assert float(coarse[3]) <= float(euler["dt = 1/16"][3])
    assert float(coarse[2]) < 0.5 * float(euler["dt = 1/16"][2])
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
        from adaptive_sde._bench.overhead import METHODS, QUICK_SIZES

        rows = result["evaluations"]
        assert [(r["batch"], r["d"]) for r in rows] == list(QUICK_SIZES)
        for r in rows:
            assert tuple(r["methods"]) == METHODS
            for m in r["methods"].values():
                assert m["call"]["median"] > 0 and m["overhead"]["median"] > 0
        assert result["generator"] and result["register"]
        assert "overhead µs / eval" in out


# --- the benchmarks beside the page's three: each one's --quick run ----------------------------


def _bench(which: str, out: Path, *extra: str) -> dict:
    main(["bench", which, "--quick", "--out", str(out), *extra])
    result = json.loads((out / f"{which}.json").read_text())
    assert result["quick"] is True and "cpu" in result["machine"]
    assert _is_png(out / f"{which}.png")
    return result


def test_bench_help_names_every_benchmark_and_what_all_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from adaptive_sde._cli.bench import ALL, BENCHMARKS

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert set(BENCHMARKS) >= {
        "analytic",
        "gmm",
        "overhead",
        "strong_order",
        "unbiasedness",
        "sign_bias",
        "double_well_steps",
        "sampler_memory",
        "gpu_check",
    }
    for name in BENCHMARKS:
        assert f"- {name}: " in out, name
    assert ALL == ["analytic", "gmm", "overhead"]
    assert "all runs the three of the page (analytic, gmm, overhead)" in out


def test_bench_strong_order_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptive_sde._bench.problems import PROBLEMS

    result = _bench("strong_order", tmp_path)
    out = capsys.readouterr().out
    assert [r["problem"] for r in result["rows"]] == [p.name for p in PROBLEMS]
    for r in result["rows"]:
        errors = r["errors"]
        assert len(errors) == len(result["steps"]) and all(0 < e < 1 for e in errors)
        assert errors[-1] < errors[0]
        # the fitted order is the expected one (1, or 1/2 for Itô general noise)
        assert abs(r["order"] - r["expected"]) <= 0.2, r
        assert _rows(out, r["problem"] + " "), r["problem"]  # its row in the printed table


def test_bench_unbiasedness_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench("unbiasedness", tmp_path, "--paths", "1500")
    assert result["paths"] == 1500
    exact, se = result["ou_exact_var"], result["ou_var_se"]
    assert math.isclose(exact, (1 - math.exp(-8)) / 8)
    assert len(result["ou"]) == 2 and len(result["gbm"]) == 2
    for r in result["ou"]:
        # the register is unbiased; the redrawing control is visibly not (about 0.19-0.21)
        assert abs(r["register_var"] - exact) <= 5 * se, r
        assert r["redraw_var"] > exact + 0.04, r
        assert r["nfe_mean"] > 0 and 0 < r["rejected"] < 1
    for r in result["gbm"]:
        assert abs(r["mean"] - result["gbm_exact_mean"]) <= 5 * r["mean_se"], r
    out = capsys.readouterr().out
    assert "Ornstein-Uhlenbeck Var[X_1]: exact 0.1250" in out
    assert len(_rows(out, "0.1 ")) == 2  # one row in each table


def test_bench_sign_bias_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench("sign_bias", tmp_path)
    rows = {(r["rtol"], r["signs"]): r for r in result["rows"]}
    assert set(rows) == {(0.1, "shared"), (0.1, "decoupled"), (0.02, "shared"), (0.02, "decoupled")}
    for (rtol, signs), r in rows.items():
        assert all(math.isfinite(z) for z in r["z"]) and len(r["z"]) == 2
        assert all(abs(m - e) < 0.2 for m, e in zip(r["mean"], result["exact"], strict=True))
        if signs == "decoupled":  # one more evaluation per attempt
            assert r["nfe_mean"] > rows[(rtol, "shared")]["nfe_mean"]
    assert len(_rows(capsys.readouterr().out, "0.02")) == 2


def test_bench_double_well_steps_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench("double_well_steps", tmp_path, "--page", str(tmp_path / "page.md"))
    em, *gtgf = result["rows"]
    assert em["solver"].startswith("euler-maruyama") and len(gtgf) == 2
    width = result["bins"][1] - result["bins"][0]
    for r in result["rows"]:
        assert 0.9 < sum(r["density"]) * width <= 1 + 1e-9  # almost all of X_T in the bins
    for r in gtgf:
        se = math.hypot(r["p_right_se"], em["p_right_se"])
        assert abs(r["p_right"] - em["p_right"]) <= 4 * se, r
        assert r["nfe_mean"] < em["nfe_mean"] / 10
    assert gtgf[0]["dt_largest"] > 1  # the large steps the benchmark is about
    page = (tmp_path / "page.md").read_text()
    assert "## Large steps with additive noise in a double well" in page
    assert "| euler-maruyama h=0.001 |" in page


@pytest.mark.slow  # two fresh processes that import diffusers: tens of seconds on a busy machine
def test_bench_sampler_memory_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("diffusers")
    result = _bench("sampler_memory", tmp_path)
    nograd, grad = result["rows"]
    assert (nograd["mode"], grad["mode"]) == ("nograd", "grad")
    assert not nograd["requires_grad"] and grad["requires_grad"]
    assert nograd["model_calls"] == grad["model_calls"] > 0
    # the graph costs memory; without it sampling keeps almost nothing
    assert grad["peak_growth_mib"] > nograd["peak_growth_mib"] + 20
    assert "grad=True" in capsys.readouterr().out


def test_bench_paths_for_a_benchmark_without_paths_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "sampler_memory", "--paths", "10", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "adaptive-sde: error: --paths: sampler_memory has no Monte-Carlo paths" in err
    assert not list(tmp_path.iterdir())


def test_bench_gpu_check_passes_the_device_and_reports_no_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adaptive_sde._bench import gpu_check

    seen = []

    def no_device(quick: bool = False, device: str | None = None) -> dict:
        seen.append((quick, device))
        return {"device": None, "note": gpu_check.NO_DEVICE, "sampler": [], "overhead": None}

    monkeypatch.setattr(gpu_check, "run", no_device)
    result = _bench("gpu_check", tmp_path, "--device", "cuda:1")
    assert seen == [(True, "cuda:1")]
    assert result["device"] is None and result["note"] == gpu_check.NO_DEVICE
    assert "no CUDA device here" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "strong_order", "--device", "cpu", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert "adaptive-sde: error: --device: strong_order runs on the CPU only" in (
        capsys.readouterr().err
    )


# --- help as plain text, --version, one-line errors ---------------------------------------------

ROLE_OR_LITERAL = re.compile(r":[a-z]+:`|``")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import adaptive_sde

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"adaptive-sde {adaptive_sde.__version__}"


@pytest.mark.parametrize("argv", [[], ["demo"], ["bench"], ["sample-gmm"]])
def test_help_has_no_rest_markup(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert not ROLE_OR_LITERAL.search(out), out
    assert "--debug" in out
    if argv == ["sample-gmm"]:
        # the role's target as plain text, the literal without its backticks
        assert "with adaptive_sde.distributed.sample_distributed" in out
        assert "(torchrun --nproc-per-node 2 -m adaptive_sde sample-gmm" in out


def test_plain_renders_roles_and_literals() -> None:
    from adaptive_sde._cli import plain

    text = (
        "see :mod:`adaptive_sde._cli`, :class:`~adaptive_sde.Solution`, "
        ":func:`the solver <adaptive_sde.solve>` and ``sample(x)``; :py:meth:`a.b`"
    )
    assert plain(text) == ("see adaptive_sde._cli, Solution, the solver and sample(x); a.b")
    assert plain(None) is None


def _sample_gmm(out: Path, *extra: str) -> list[str]:
    return ["sample-gmm", "--samples", "16", "--shard-size", "8", "--out", str(out), *extra]


def test_settings_mismatch_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    main(_sample_gmm(out))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(_sample_gmm(out, "--rtol", "0.05"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "adaptive-sde" in line]
    assert len(lines) == 1 and "Traceback" not in err
    message = lines[0][lines[0].index("adaptive-sde: error: ") :]
    assert "other settings" in message and "options.rtol" in message
    # --debug, before or after the command: the exception itself, with its traceback
    for argv in (
        ["--debug", *_sample_gmm(out, "--rtol", "0.05")],
        [*_sample_gmm(out, "--rtol", "0.05"), "--debug"],
    ):
        with pytest.raises(ValueError, match="other settings"):
            main(argv)
    # the same arguments as the first run: nothing is refused
    main(_sample_gmm(out))
    assert "16 found finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--rtol", "-1"], "adaptive-sde: error: rtol must be a number in [0, 1], got -1.0"),
        (["--rtol", "nan"], "adaptive-sde: error: rtol must be a finite number"),
    ],
)
def test_library_refusal_is_one_line(
    extra: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(_sample_gmm(tmp_path / "run", *extra))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--samples", "-3"], "argument --samples: must be a positive integer, got '-3'"),
        (["--shard-size", "0"], "argument --shard-size: must be a positive integer"),
        (["--dim", "x"], "argument --dim: must be a positive integer, got 'x'"),
        (["--device", "foo"], "argument --device: not a torch device: 'foo'"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(
    extra: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(_sample_gmm(tmp_path / "run", *extra))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"adaptive-sde sample-gmm: error: {expected}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_solve_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from adaptive_sde import SolveError
    from adaptive_sde._cli import demo

    def fail(args: object) -> None:
        raise SolveError(
            "2 of 4 samples failed:\n  sample 1: NONFINITE\n  sample 3: NONFINITE", None
        )

    monkeypatch.setattr(demo, "run", fail)
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--quick"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "adaptive-sde: error: 2 of 4 samples failed: sample 1: NONFINITE sample 3: NONFINITE\n"
    )
    with pytest.raises(SolveError):
        main(["--debug", "demo", "--quick"])
