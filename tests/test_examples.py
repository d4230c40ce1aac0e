"""The scripts of ``examples/`` run in their quick mode, write their figures, and their key numbers
say what the examples claim: each ``main(argv)`` returns them as a dict.

The examples are loaded from their files (``examples/`` is not a package) and run in-process,
which is faster than a subprocess each; one subprocess run checks the command-line entry.
The bands are generous, but each fails if the example's point is lost.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (registered, so its dataclasses resolve)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_quick(name: str, out: Path) -> dict[str, Any]:
    """``main(["--quick", "--out", out])`` of an example, with its figures checked."""
    result = load(name).main(["--quick", "--out", str(out)])
    assert result["figures"], f"{name} wrote no figure"
    for figure in result["figures"]:
        path = Path(figure)
        assert path.parent == out and path.exists(), f"{name}: missing {path}"
        assert path.read_bytes()[:8] == PNG, f"{name}: {path} is not a PNG"
    return result


def test_quickstart(tmp_path: Path) -> None:
    r = run_quick("quickstart", tmp_path)
    # The mean against e, within Monte-Carlo error; the discretisation error on the same paths.
    assert abs(r["sdeint"]["mean_z"]) < 4
    for run in ("sdeint", "per_sample"):
        assert r[run]["strong_error"] < 0.05
        assert abs(r[run]["weak_error"]) < 0.02
    # One grid for the batch (sdeint): every path the same steps; per-sample: each its own.
    assert r["sdeint"]["nfe_max"] == r["sdeint"]["nfe_mean"]
    assert r["per_sample"]["nfe_max"] > 1.5 * r["per_sample"]["nfe_mean"]


def test_double_well(tmp_path: Path) -> None:
    r = run_quick("double_well", tmp_path)
    assert r["exact"] == pytest.approx(24.9314, abs=1e-3)  # the quadrature, pinned
    # The bridge-corrected estimate within 4 standard errors (~11 % here) of the exact MFPT.
    assert abs(r["estimate"] - r["exact"]) < 4 * r["se"]
    assert r["se"] < 0.05 * r["exact"]
    assert r["dt_smallest"] < r["dt_largest"] <= 0.1 + 1e-9  # adaptive, within the output grid


def test_neural_sde(tmp_path: Path) -> None:
    r = run_quick("neural_sde", tmp_path)
    assert r["final_loss"] < r["initial_loss"] / 5
    assert math.isfinite(r["nfe_last"]) and r["nfe_last"] > 0


def test_gmm_sampling(tmp_path: Path) -> None:
    r = run_quick("gmm_sampling", tmp_path)
    gtgf, exact = r["gtgf"], r["exact"]
    assert gtgf["evals"] < 1000  # cheaper than the 1000-step reference
    assert gtgf["mode_tv"] < 0.08  # exact samples of this size: ~0.03
    # Tweedie's step at eps shrinks the modes' variance by 4.2 %; Monte-Carlo error of the
    # mean over modes: ~2 %.
    assert r["denoised_variance_error"] == pytest.approx(-0.042, abs=0.002)
    assert abs(gtgf["variance_error_mean"] - r["denoised_variance_error"]) < 0.08
    assert gtgf["off_mode"] < 0.01
    assert exact["off_mode"] < 0.01


def test_digits_score_model(tmp_path: Path) -> None:
    r = run_quick("digits_score_model", tmp_path)
    assert r["final_loss"] < r["initial_loss"]
    budget = r["em_budget_steps"]
    keys = ("gtgf rtol=0.1", "x-space", "dpm_adaptive rtol=0.1", "dpmpp_2m_sde N=20", "em1000")
    for key in (*keys, "em1000 again", f"em{budget}"):
        run = r[key]
        assert run["finite"], key
        assert -3 < run["min"] and run["max"] < 3, key  # images in [-1, 1] give or take
        assert run["model_calls"] > 0 and math.isfinite(run["frechet"]), key
    assert r["em1000"]["evals_mean"] == 1001
    assert r[f"em{budget}"]["evals_mean"] == pytest.approx(r["gtgf rtol=0.1"]["evals_mean"], abs=1)
    assert r["gtgf rtol=0.1"]["evals_mean"] < r["x-space"]["evals_mean"] < 1000
    assert r["dpmpp_2m_sde N=20"]["evals_mean"] == 20  # the real library ran, on 20 steps
    assert set(r["reach_em1000"]) == {"gtgf", "x-space", "dpm_adaptive", "dpmpp_2m_sde"}
    assert all(v >= 0 for v in r["floor"].values())


def test_command_line(tmp_path: Path) -> None:
    """An example runs as a script: ``python examples/quickstart.py --quick --out DIR``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "strong error" in done.stdout
    assert (tmp_path / "quickstart.png").read_bytes()[:8] == PNG


def test_latent_diffusion(tmp_path: Path) -> None:
    r = run_quick("latent_diffusion", tmp_path)
    assert r["finite"] and r["image_shape"] == (3, 32, 32)
    # the conditioning follows the rows: image 1 alone is its row of the batch (a random UNet
    # evaluated on batches of other sizes rounds differently in the last bits)
    assert r["alone_error"] < 1e-3
    assert r["rows_evaluated"] == round(r["score_evals_mean"] * r["images"])
    assert r["model_calls"] < r["rows_evaluated"]  # finished latents left the batch
