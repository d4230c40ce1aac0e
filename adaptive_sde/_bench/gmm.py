"""Sample quality against score evaluations, on Gaussian mixtures with exact scores, against the
samplers diffusion users already have (run from k-diffusion and diffusers in the same process).

Settings: 2-D (a ring of 8 Gaussians), 64-D and 3072-D (4 components), each under the VP and
the VE SDE. Every sampler starts from the same prior draws and is given the mixture's exact data
prediction D (or the score, or epsilon, as its convention wants). Samplers:

- ``gtgf snr``: :func:`~adaptive_sde.diffusion.sample` (the Gotta-Go-Fast pair in
  signal-to-noise time, the default) at several ε_rel, ε_abs = 0.0078;
- ``gtgf x-space``: the same sampler on the reverse SDE in x (``space="x"``);
- ``paper config``: the paper's own configuration, in x: fresh noise after a rejection, and the
  whole batch evaluated until its slowest sample ends (2 x the slowest sample's attempts);
- k-diffusion's ``sample_dpm_adaptive`` (eta 0: the probability-flow ODE; eta 1: ancestral) at
  several rtol with atol 0.0078, then one denoising call at sigma_min; ``sample_dpmpp_2m_sde``,
  ``sample_dpmpp_3m_sde`` and ``sample_euler_ancestral`` on Karras et al.'s noise levels;
- diffusers' ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")`` on its DDPM
  schedule (VP settings only: it has no VE schedule);
- Euler-Maruyama with 30 to 1000 steps, and the probability-flow ODE with scipy's RK45.

Quality, each with its floor (the same measure between two independent exact sample sets):

- mode TV: total variation between the component weights of the samples (each assigned to
  its most likely component) and the true weights;
- variance error: mean over components of |pooled per-dimension variance / true - 1|;
- NLL gap: mean negative log-likelihood under the true mixture, minus that of exact samples
  (negative: samples huddle at the modes; compared in absolute value below);
- Fréchet distance between Gaussian fits of the samples and of exact samples.

The closing tables give, per setting and sampler, the fewest evaluations per sample (and model
calls) at which a measure is within the floor of 1000-step Euler-Maruyama's value (|measure| <=
|EM1000's| + floor), for each measure and for all four at once, and the rows ``sample`` saved
by not evaluating finished samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import adaptive_sde
from adaptive_sde import BrownianRegister
from adaptive_sde._bench import baselines
from adaptive_sde._bench.controls import RedrawingBrownian
from adaptive_sde._bench.report import format_table, pyplot
from adaptive_sde._controller import StepController
from adaptive_sde.diffusion import (
    VESDE,
    VPSDE,
    ForwardSDE,
    GaussianMixture,
    ReverseSDE,
    component_spread,
    prior_sample,
    sample,
    sample_euler_maruyama,
    sample_probability_flow,
)
from adaptive_sde.diffusion import _sample as sample_module
from adaptive_sde.diffusion._adapters import data_prediction_of
from adaptive_sde.diffusion._reverse import ScoreCounter
from adaptive_sde.diffusion._sample import _tweedie
from adaptive_sde.diffusion._snr import WEIGHTS, SNRSampler

NAME = "gmm"
TITLE = "Score-based sampling of Gaussian mixtures with exact scores"
SNR_RTOLS = (0.4, 0.2, 0.1, 0.05, 0.02)
RTOLS = (0.1, 0.05, 0.02)
K_RTOLS = (0.2, 0.1, 0.05, 0.02)
STEPS = (10, 20, 50, 100, 200)
EM_STEPS = (30, 100, 300, 1000)
ODE_TOLS = (1e-2, 1e-3, 1e-5)
MEASURES = ("mode_tv", "variance_error", "nll_gap", "frechet")
OURS = ("gtgf snr", "gtgf x-space", "paper config")
SAMPLERS = (
    *OURS,
    *baselines.K_SAMPLERS,
    baselines.DIFFUSERS_SAMPLER,
    "euler-maruyama",
    "pf-ode rk45",
)


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits: |m_a - m_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2),
    with tr (S_a S_b)^1/2 = sum sqrt(eig(S_a^1/2 S_b S_a^1/2))."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    ea, va = torch.linalg.eigh(sa)
    root = (va * ea.clamp(min=0).sqrt()) @ va.T
    cross = torch.linalg.eigvalsh(root @ sb @ root).clamp(min=0).sqrt().sum()
    return float(((ma - mb) ** 2).sum() + sa.trace() + sb.trace() - 2 * cross)


def measures(mixture: GaussianMixture, x: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """The four quality measures of ``x`` against the exact samples ``exact``."""
    spread = component_spread(mixture, x)
    return {
        "mode_tv": mixture.mode_tv(x),
        "variance_error": sum(abs(s.variance_error) for s in spread) / len(spread),
        "nll_gap": float(-mixture.log_prob(x).mean() + mixture.log_prob(exact).mean()),
        "frechet": frechet(x, exact),
    }


def paper_configuration(
    mixture: GaussianMixture, sde: ForwardSDE, n: int, rtol: float, seed: int
) -> tuple[torch.Tensor, int]:
    """Fresh noise after a rejection; cost = the whole batch until its slowest sample ends."""
    x_T = prior_sample(sde, (n, mixture.dim), seed, dtype=torch.float32)
    reverse = ReverseSDE(sde, mixture.score_fn(sde), (mixture.dim,))
    ts = torch.tensor([0.0, sde.T - sde.eps], dtype=torch.float64)
    sol = adaptive_sde.solve(
        reverse,
        x_T,
        ts,
        rtol=rtol,
        atol=0.0078,
        dt0=0.01,
        throw=False,
        bm=RedrawingBrownian(n, mixture.dim, seed, dtype=torch.float32),
    )
    x = _tweedie(reverse.score, sde, sol.ys[-1], sde.eps)
    return x, int(sol.stats.nfe.max()) + 1


def run_setting(
    name: str,
    mixture: GaussianMixture,
    sde: ForwardSDE,
    n: int,
    quick: bool,
    tick: Callable[[], Any],
) -> dict[str, Any]:
    """Every sampler on one mixture and forward SDE; rows of measures with the floor."""
    exact, _ = mixture.sample(n, seed=100)
    other, _ = mixture.sample(n, seed=101)
    floor = measures(mixture, other, exact)
    rows = []

    def add(
        sampler: str, setting: str, x: torch.Tensor, evals: float, calls: int, **extra: Any
    ) -> None:
        rows.append(
            {
                "sampler": sampler,
                "setting": setting,
                "evals": evals,
                "model_calls": calls,
                **measures(mixture, x.float(), exact),
                **extra,
            }
        )
        tick()

    shape = (n, mixture.dim)
    score = mixture.score_fn(sde)
    x_T = prior_sample(sde, shape, 1)
    for rtol in SNR_RTOLS[2:3] if quick else SNR_RTOLS:
        x, st = sample(score, sde, shape, rtol=rtol, seed=1)
        slowest = int(st.score_evals.max())
        add(
            "gtgf snr",
            f"rtol={rtol}",
            x,
            float(st.score_evals.double().mean()),
            st.model_calls,
            evals_slowest=slowest,
            rows_evaluated=st.rows_evaluated,
            rows_saved=slowest * n - st.rows_evaluated,
        )
    for rtol in RTOLS[1:2] if quick else RTOLS:
        x, st = sample(score, sde, shape, rtol=rtol, seed=1, space="x")
        add(
            "gtgf x-space", f"rtol={rtol}", x, float(st.score_evals.double().mean()), st.model_calls
        )
        x, paper_evals = paper_configuration(mixture, sde, n, rtol, seed=1)
        add("paper config", f"rtol={rtol}", x, float(paper_evals), paper_evals)
    for sampler in baselines.K_SAMPLERS:
        adaptive = sampler.startswith("dpm_adaptive")
        settings = K_RTOLS if adaptive else STEPS
        for setting in settings[1:2] if quick else settings:
            x, evals, calls = baselines.run_k_diffusion(
                sampler, setting, score.data_prediction, sde, x_T, seed=1
            )
            add(sampler, f"rtol={setting}" if adaptive else f"N={setting}", x, evals, calls)
    if isinstance(sde, VPSDE):
        for steps in STEPS[1:3] if quick else STEPS:
            x, evals, calls = baselines.run_diffusers(steps, mixture, x_T, seed=1)
            add(baselines.DIFFUSERS_SAMPLER, f"N={steps}", x, evals, calls)
    for steps in EM_STEPS[::3] if quick else EM_STEPS:
        x, st = sample_euler_maruyama(score, sde, shape, steps=steps, seed=1)
        add("euler-maruyama", f"N={steps}", x, float(st.score_evals[0]), st.model_calls)
    if mixture.dim <= 64 or not quick:
        for tol in ODE_TOLS[:1] if quick else ODE_TOLS:
            x, st = sample_probability_flow(score, sde, shape, rtol=tol, atol=tol, seed=1)
            add("pf-ode rk45", f"tol={tol:g}", x, float(st.score_evals[0]), st.model_calls)
    return {"name": name, "n": n, "floor": floor, "rows": rows}


def _matches(
    row: dict[str, Any], reference: dict[str, Any], floor: dict[str, float], key: str
) -> bool:
    """Whether ``row`` is as good as 1000-step Euler-Maruyama on measure ``key``: within the
    Monte-Carlo floor of its value. The NLL gap counts in absolute value: exact samples have a
    gap of 0 within the floor, and a negative gap is samples huddled at the modes."""
    value, ref = row[key], reference[key]
    if key == "nll_gap":
        value, ref = abs(value), abs(ref)
    return bool(value <= ref + abs(floor[key]))


def reach_em1000(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per sampler, the fewest evaluations per sample at which each measure (and all four, with
    the model calls there) is within the floor of 1000-step Euler-Maruyama's."""
    rows, floor = result["rows"], result["floor"]
    reference = next(
        r for r in rows if r["sampler"] == "euler-maruyama" and r["setting"] == "N=1000"
    )
    out: dict[str, dict[str, float]] = {}
    for sampler in SAMPLERS:
        mine = [r for r in rows if r["sampler"] == sampler]
        if not mine:
            continue
        best: dict[str, float] = {}
        for key in (*MEASURES, "all"):
            keys = MEASURES if key == "all" else (key,)
            ok = [r for r in mine if all(_matches(r, reference, floor, k) for k in keys)]
            best[key] = min((r["evals"] for r in ok), default=math.inf)
            if key == "all":
                calls = [r["model_calls"] for r in ok if r["evals"] == best[key]]
                best["model_calls"] = min(calls, default=math.inf)
        out[sampler] = best
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """All settings (with ``quick``: 2-D and 64-D at a quarter of the samples; one tolerance,
    Euler-Maruyama at 30 and 1000 steps, the ODE at 1e-2)."""
    settings = [
        ("2-D ring", GaussianMixture.ring(), 4000),
        ("64-D", GaussianMixture.random(64), 2000),
        ("3072-D", GaussianMixture.random(3072), 500),
    ]
    if quick:
        settings = [(name, m, k // 8) for name, m, k in settings[:2]]
    per_setting = (
        13
        if quick
        else (
            len(SNR_RTOLS) + 2 * len(RTOLS) + 2 * len(K_RTOLS) + 4 * len(STEPS) + len(EM_STEPS) + 3
        )
    )
    results = []
    with tqdm(total=2 * len(settings) * per_setting, desc=NAME, unit="run", leave=False) as bar:
        for name, mixture, n in settings:
            for sde_name, sde in (("VP", VPSDE()), ("VE", VESDE())):
                result = run_setting(f"{name} {sde_name}", mixture, sde, n, quick, bar.update)
                result["reach_em1000"] = reach_em1000(result)
                results.append(result)
    return {"results": results, "weights": weights_ablation(quick)}


def weights_ablation(quick: bool = False) -> list[dict[str, Any]]:
    """The SNR sampler's second-stage weights on Gaussian data N(0, 0.05^2 I) in 16-D (VP and
    VE, rtol 0.1): the samples' standard deviation against exact sampling followed by the same
    final denoising, and the evaluations per sample."""
    std, d, n = 0.05, 16, 2000 if quick else 20_000
    data = GaussianMixture(
        torch.zeros(1, d, dtype=torch.float64),
        torch.tensor([std], dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
    )
    out = []
    for sde_name, sde in (("VP", VPSDE()), ("VE", VESDE())):
        t = torch.tensor(sde.eps, dtype=torch.float64)
        a, s = float(sde.alpha(t)), float(sde.sigma(t))
        k = a * std**2 / (a**2 * std**2 + s**2)
        target = k * math.sqrt(a**2 * std**2 + s**2)
        for weights in WEIGHTS:
            counter = ScoreCounter(data_prediction_of(data.score_fn(sde), sde), (d,))
            register = BrownianRegister(n, d, seed=5, time_dtype=torch.float64)
            controller = StepController(defaults=sample_module.SAMPLE_DEFAULTS["snr"])
            sampler = SNRSampler(counter, sde, controller, register, weights=weights)
            result = sampler.run(prior_sample(sde, (n, d), 5), sde.eps)
            ts = torch.full((n,), sde.eps)
            x = counter(result.x, ts)
            out.append(
                {
                    "sde": sde_name,
                    "weights": weights,
                    "std": float(x.double().std(0).mean()),
                    "exact_std": target,
                    "evals": float(result.stats.nfe.double().mean()) + 1,
                }
            )
    return out


def _evals(value: float) -> str:
    return "-" if math.isinf(value) else f"{value:.0f}"


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """Per setting the measures of every sampler; then evaluations to reach EM1000 quality,
    and the rows saved by not evaluating finished samples."""
    out = []
    header = ("sampler", "setting", "evals/sample", "mode TV", "variance err", "NLL gap", "Fréchet")
    for r in result["results"]:
        rows = [("exact (floor)", "another draw", "", *(f"{r['floor'][k]:.4g}" for k in MEASURES))]
        rows += [
            (
                row["sampler"],
                row["setting"],
                f"{row['evals']:.1f}",
                *(f"{row[k]:.4g}" for k in MEASURES),
            )
            for row in r["rows"]
        ]
        out.append((f"{r['name']}, {r['n']} samples", format_table(header, rows, markdown, 2)))
    headline = (*OURS[:1], *baselines.K_SAMPLERS[1:3], baselines.DIFFUSERS_SAMPLER)
    reach = [
        (r["name"], *(_evals(r["reach_em1000"].get(s, {}).get("all", math.inf)) for s in headline))
        for r in result["results"]
    ]
    out.append(
        (
            "Evaluations per sample to reach 1000-step Euler-Maruyama quality on all four measures "
            "(-: not within the sweep; diffusers has no VE schedule)",
            format_table(("setting", *headline), reach, markdown),
        )
    )
    detail = [
        (
            r["name"],
            sampler,
            *(_evals(best[k]) for k in (*MEASURES, "all", "model_calls")),
        )
        for r in result["results"]
        for sampler, best in r["reach_em1000"].items()
    ]
    out.append(
        (
            "Per measure: the fewest evaluations per sample within the floor of EM1000's value, "
            "and the model calls (whole-batch evaluations) where all four are",
            format_table(
                (
                    "setting",
                    "sampler",
                    "mode TV",
                    "variance",
                    "|NLL gap|",
                    "Fréchet",
                    "all",
                    "calls",
                ),
                detail,
                markdown,
                2,
            ),
        )
    )
    if "weights" in result:
        ablation = [
            (
                w["sde"],
                w["weights"],
                f"{w['evals']:.1f}",
                f"{w['std']:.5f}",
                f"{w['exact_std']:.5f}",
                f"{(w['std'] / w['exact_std']) ** 2:.4f}",
            )
            for w in result["weights"]
        ]
        out.append(
            (
                "The SNR sampler's second-stage weights on Gaussian data (std 0.05, 16-D, rtol "
                "0.1): sample standard deviation against exact sampling and the same denoising",
                format_table(
                    ("SDE", "weights", "evals/sample", "std", "exact std", "variance ratio"),
                    ablation,
                    markdown,
                ),
            )
        )
    saved = []
    for r in result["results"]:
        for row in r["rows"]:
            if row["sampler"] == "gtgf snr":
                share = row["rows_saved"] / (row["rows_saved"] + row["rows_evaluated"])
                saved.append(
                    (r["name"], row["setting"], f"{row['rows_saved']}", f"{100 * share:.1f}")
                )
    out.append(
        (
            "Rows `sample` saved by not evaluating finished samples (% of evaluating the batch "
            "until its slowest sample ends)",
            format_table(("setting", "rtol", "rows saved", "%"), saved, markdown, 2),
        )
    )
    return out


PLOTTED = (
    "gtgf snr",
    "gtgf x-space",
    "dpm_adaptive eta=1",
    "dpm_adaptive eta=0",
    "dpmpp_2m_sde",
    baselines.DIFFUSERS_SAMPLER,
    "euler-maruyama",
)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Variance error and |NLL gap| against evaluations per sample, one row per setting (so the
    figure stays legible at page width); the shaded band is the Monte-Carlo floor (exact against
    exact), the dashed line 1000-step Euler-Maruyama's value."""
    plt = pyplot()
    settings = result["results"]
    height = 2.4 * len(settings) + 0.9
    fig, axes = plt.subplots(len(settings), 2, figsize=(8, height), dpi=150, squeeze=False)
    for row, r in enumerate(settings):
        reference = next(
            p for p in r["rows"] if p["sampler"] == "euler-maruyama" and p["setting"] == "N=1000"
        )
        for col, key in enumerate(("variance_error", "nll_gap")):
            ax = axes[row, col]
            for i, sampler in enumerate(PLOTTED):
                points = sorted(
                    (p["evals"], abs(p[key])) for p in r["rows"] if p["sampler"] == sampler
                )
                if points:
                    n, v = zip(*points, strict=True)
                    ax.plot(n, v, marker="o", markersize=3, color=f"C{i}", label=sampler)
            floor = abs(r["floor"][key])
            ax.axhspan(0, floor, color="0.88")
            ax.axhline(abs(reference[key]), color="0.3", linestyle="--", linewidth=0.8)
            ax.set_xscale("log")
            # linear within the floor, logarithmic beyond: differences below the Monte-Carlo
            # floor are noise, those above it span decades
            ax.set_yscale("symlog", linthresh=max(floor, 1e-4))
            ax.set_ylim(bottom=0)  # absolute values
            ax.tick_params(labelsize=9)
            ax.set_title(f"{r['name']}: {key.replace('_', ' ')}", fontsize=10)
            if row == len(settings) - 1:
                ax.set_xlabel("evaluations per sample", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / height))
    fig.savefig(path)
    plt.close(fig)
    return path
