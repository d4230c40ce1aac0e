"""Sample quality against score evaluations, on Gaussian mixtures with exact scores.

Settings: 2-D (a ring of 8 Gaussians), 64-D and 3072-D (4 components), each under the VP and
the VE SDE. Samplers:

- ``sample`` (this library) at several ε_rel, ε_abs = 0.0078;
- the paper's own configuration at the same ε_rel: fresh noise after a rejection, and the whole
  batch evaluated until its slowest sample ends (its cost is 2 x the slowest sample's attempts,
  as the paper counts);
- Euler-Maruyama with 10 to 1000 steps;
- the probability-flow ODE with scipy's RK45 (Song et al. 2021), at several tolerances.

Quality, each with its floor (the same measure between two independent exact sample sets):

- mode TV: total variation between the component weights of the samples (each assigned to
  its most likely component) and the true weights;
- variance error: mean over components of |pooled per-dimension variance / true - 1|;
- NLL gap: mean negative log-likelihood under the true mixture, minus that of exact samples;
- Fréchet distance between Gaussian fits of the samples and of exact samples.

The closing table gives, per setting and sampler, the fewest evaluations per sample at which
every measure is within the floor of 1000-step Euler-Maruyama's value (measure <= EM1000 +
floor), and the rows ``sample`` saved by not evaluating finished samples.
Run: ``python benchmarks/diffusion_quality.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math

import _common  # noqa: F401  (sys.path)
import torch
from _common import save

import adaptive_sde
from adaptive_sde.diffusion import (
    VESDE,
    VPSDE,
    GaussianMixture,
    ReverseSDE,
    component_spread,
    prior_sample,
    sample,
    sample_euler_maruyama,
    sample_probability_flow,
)
from adaptive_sde.diffusion._sample import _tweedie
from tests.helpers import RedrawingBrownian

RTOLS = (0.1, 0.05, 0.02, 0.01)
EM_STEPS = (10, 30, 100, 300, 1000)
ODE_TOLS = (1e-2, 1e-3, 1e-5)


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
    k = mixture.assign(x)
    weights = torch.bincount(k, minlength=len(mixture.weights)).double() / x.shape[0]
    spread = component_spread(mixture, x)
    return {
        "mode_tv": 0.5 * float((weights - mixture.weights).abs().sum()),
        "variance_error": sum(abs(s.variance_error) for s in spread) / len(spread),
        "nll_gap": float(-mixture.log_prob(x).mean() + mixture.log_prob(exact).mean()),
        "frechet": frechet(x, exact),
    }


def paper_configuration(mixture, sde, n, rtol, seed):
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


def run_setting(name, mixture, sde, n, quick):
    exact, _ = mixture.sample(n, seed=100)
    other, _ = mixture.sample(n, seed=101)
    floor = measures(mixture, other, exact)
    rows = []

    def add(sampler, setting, x, evals, **extra):
        row = {
            "sampler": sampler,
            "setting": setting,
            "evals": evals,
            **measures(mixture, x, exact),
            **extra,
        }
        rows.append(row)
        print(
            f"  {sampler:<18} {setting:<10} evals {evals:>7.1f}  "
            + "  ".join(
                f"{k} {row[k]:.4g}" for k in ("mode_tv", "variance_error", "nll_gap", "frechet")
            )
        )

    rtols = RTOLS[1:3] if quick else RTOLS
    for rtol in rtols:
        x, st = sample(mixture.score_fn(sde), sde, (n, mixture.dim), rtol=rtol, generator=1)
        slowest = int(st.score_evals.max())
        add(
            "sample",
            f"rtol={rtol}",
            x,
            float(st.score_evals.double().mean()),
            evals_slowest=slowest,
            rows_evaluated=st.rows_evaluated,
            rows_saved=slowest * n - st.rows_evaluated,
        )
        x, evals = paper_configuration(mixture, sde, n, rtol, seed=1)
        add("paper config", f"rtol={rtol}", x, float(evals))
    for steps in EM_STEPS[1:] if quick else EM_STEPS:
        x, st = sample_euler_maruyama(
            mixture.score_fn(sde), sde, (n, mixture.dim), steps=steps, generator=1
        )
        add("euler-maruyama", f"N={steps}", x, float(st.score_evals[0]))
    if mixture.dim <= 64 or not quick:
        for tol in ODE_TOLS[:2] if quick else ODE_TOLS:
            x, st = sample_probability_flow(
                mixture.score_fn(sde), sde, (n, mixture.dim), rtol=tol, atol=tol, generator=1
            )
            add("pf-ode rk45", f"tol={tol:g}", x, float(st.score_evals[0]))
    return {"name": name, "n": n, "floor": floor, "rows": rows}


def reach_em1000(result):
    rows, floor = result["rows"], result["floor"]
    reference = next(r for r in rows if r["setting"] == "N=1000")
    keys = ("mode_tv", "variance_error", "nll_gap", "frechet")
    out = {}
    for sampler in ("sample", "paper config", "euler-maruyama", "pf-ode rk45"):
        ok = [
            r["evals"]
            for r in rows
            if r["sampler"] == sampler and all(r[k] <= reference[k] + abs(floor[k]) for k in keys)
        ]
        out[sampler] = min(ok) if ok else math.inf
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    settings = [
        ("2-D ring", GaussianMixture.ring(), 4000),
        ("64-D", GaussianMixture.random(64), 2000),
        ("3072-D", GaussianMixture.random(3072), 500),
    ]
    if args.quick:
        settings = [(n, m, k // 4) for n, m, k in settings[:2]]
    results = []
    for name, mixture, n in settings:
        for sde_name, sde in (("VP", VPSDE()), ("VE", VESDE())):
            print(f"\n{name} {sde_name}, {n} samples; floor (exact vs exact):")
            result = run_setting(f"{name} {sde_name}", mixture, sde, n, args.quick)
            print("  " + "  ".join(f"{k} {v:.4g}" for k, v in result["floor"].items()))
            result["reach_em1000"] = reach_em1000(result)
            results.append(result)
    print("\nEvaluations per sample to reach 1000-step Euler-Maruyama quality on every measure:")
    print(f"{'setting':<16}" + "".join(f"{s:>16}" for s in results[0]["reach_em1000"]))
    for r in results:
        print(
            f"{r['name']:<16}"
            + "".join(
                f"{('-' if math.isinf(v) else f'{v:.0f}'):>16}" for v in r["reach_em1000"].values()
            )
        )
    print("\nRows saved by not evaluating finished samples (sample, per setting and rtol):")
    for r in results:
        for row in r["rows"]:
            if row["sampler"] == "sample":
                share = row["rows_saved"] / (row["rows_saved"] + row["rows_evaluated"])
                print(
                    f"  {r['name']:<14} {row['setting']:<10} {row['rows_saved']:>10} rows "
                    f"({100 * share:.1f} % of evaluating the batch until its slowest sample)"
                )
    save("diffusion_quality", {"results": results})


if __name__ == "__main__":
    main()
