"""Training a neural SDE by backpropagating through ``torchsde.sdeint(method="gtgf")``.

The target is the Ornstein-Uhlenbeck process dX = theta (mu - X) dt + s dW from X(0) = 0, whose
marginals are Gaussian with mean mu (1 - e^{-theta t}) and variance
s^2 / (2 theta) (1 - e^{-2 theta t}). The model is an Itô SDE with diagonal noise,
dY = f(Y) dt + g(t) dW, whose drift f and diffusion g (kept positive by a softplus) are small
MLPs that start knowing nothing: f = 0 and g ≈ 0.7.

Each training step simulates a batch of model paths with the adaptive solver, compares their
sample mean and standard deviation at a few times with the target's, and takes an Adam step on
the gradient of that moment-matching loss, computed by autograd through the solver's accepted
steps (the step-size decisions are not differentiated). ``--adjoint`` uses
``torchsde.sdeint_adjoint(..., adjoint_method="gtgf")`` instead, which solves a backward SDE for
the gradient in constant memory.

The diffusion depends on time only, like the target's. A state-dependent g(Y) trains the same
way, but its noise multiplies the state, and as the learned g' grows the solver needs more
steps: several hundred evaluations per solve in our runs, with torchsde's one time grid for the
whole batch (a step is accepted only when all paths pass).

The solver's work changes as the model trains: the evaluations per solve are printed along with
the loss.

Run ``python examples/neural_sde.py`` (``--quick`` for a few iterations); the figure goes to
``examples/output/neural_sde.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torchsde
from torch import nn

import adaptive_sde  # registers method="gtgf" with torchsde

THETA, MU, S = 2.0, 1.0, 0.6
T_END = 2.0


def target_moments(ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The OU process's exact mean and standard deviation at ``ts`` (from X(0) = 0)."""
    mean = MU * (1 - torch.exp(-THETA * ts))
    std = torch.sqrt(S**2 / (2 * THETA) * (1 - torch.exp(-2 * THETA * ts)))
    return mean, std


class NeuralSDE(nn.Module):
    """dY = f(Y) dt + g(t) dW with MLPs f and g; g > 0 through a softplus."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        last = nn.Linear(hidden, 1)
        # Start from "no drift": the zero last layer makes f = 0 exactly.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.drift = nn.Sequential(
            nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), last
        )
        self.diffusion = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drift(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # t is 0-d (torchsde's one time grid for the batch): one g for every row
        time = t.reshape(1, 1).to(y.dtype).expand(y.shape[0], 1)
        return nn.functional.softplus(self.diffusion(time))


def simulate(
    model: nn.Module,
    paths: int,
    ts: torch.Tensor,
    args: argparse.Namespace,
    *,
    entropy: int,
    stats: list[adaptive_sde.SolveStats] | None = None,
    adjoint: bool | None = None,
) -> torch.Tensor:
    """Model paths at ``ts``, shape (len(ts), paths, 1), differentiable in the parameters, with
    the tolerances of ``args`` and its choice of ``sdeint`` or ``sdeint_adjoint`` unless
    ``adjoint`` says. The Brownian motion is made here from ``entropy`` (torchsde would draw one
    from numpy's global generator), so that runs repeat."""
    rtol, atol = args.rtol, args.atol
    adjoint = args.adjoint if adjoint is None else adjoint
    y0 = torch.zeros(paths, 1)
    bm = torchsde.BrownianInterval(
        t0=float(ts[0]), t1=float(ts[-1]), size=(paths, 1), entropy=entropy
    )
    tolerances = {"rtol": rtol, "atol": atol, "dt": 0.02, "bm": bm}
    options = {"stats_callback": stats.append} if stats is not None else {}
    if adjoint:
        return torchsde.sdeint_adjoint(
            model,
            y0,
            ts,
            method="gtgf",
            adjoint_method="gtgf",
            adjoint_rtol=rtol,
            adjoint_atol=atol,
            options=options,
            **tolerances,
        )
    return torchsde.sdeint(model, y0, ts, method="gtgf", options=options, **tolerances)


class OrnsteinUhlenbeck(nn.Module):
    """The target itself, to compare the solver's work on it with the trained model's."""

    noise_type = "diagonal"
    sde_type = "ito"

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return THETA * (MU - y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, S)


def moment_loss(ys: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Squared errors of the sample mean and standard deviation, summed over the times after 0."""
    x = ys[1:, :, 0]
    return ((x.mean(1) - mean[1:]) ** 2 + (x.std(1) - std[1:]) ** 2).sum()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations, for a smoke test")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    parser.add_argument("--iterations", type=int, help="default 300 (--quick: 25)")
    parser.add_argument("--paths", type=int, default=256, help="paths per training step")
    parser.add_argument("--adjoint", action="store_true", help="gradients by sdeint_adjoint")
    parser.add_argument("--rtol", type=float, default=1e-2)
    parser.add_argument("--atol", type=float, default=1e-2)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, report the loss and the solver's work, plot the fit; returns the key numbers."""
    args = parse_args(argv)
    iterations = args.iterations or (25 if args.quick else 300)
    torch.manual_seed(args.seed)  # the weights and the Roberts signs
    ts = torch.linspace(0.0, T_END, 9)
    mean, std = target_moments(ts)
    model = NeuralSDE()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(
        f"Fitting dY = f(Y) dt + g(t) dW (MLPs) to the OU process dX = {THETA} ({MU} - X) dt + "
        f"{S} dW: mean and std at {len(ts) - 1} times, {args.paths} paths per step, "
        f"{'sdeint_adjoint' if args.adjoint else 'sdeint'}(method='gtgf', "
        f"rtol={args.rtol}, atol={args.atol})"
    )
    losses, nfes = [], []
    start = time.perf_counter()
    for it in range(iterations):
        stats: list[adaptive_sde.SolveStats] = []
        optimizer.zero_grad()
        ys = simulate(model, args.paths, ts, args, entropy=args.seed * 10_000 + it, stats=stats)
        loss = moment_loss(ys, mean, std)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        nfes.append(float(stats[0].nfe.double().mean()))  # the forward solve
        if it % max(1, iterations // 10) == 0 or it == iterations - 1:
            print(f"  step {it:4d}  loss {losses[-1]:.5f}  forward evaluations {nfes[-1]:.0f}")
    seconds = time.perf_counter() - start

    # The fit, judged on more paths than a training step sees.
    with torch.no_grad():
        check = simulate(model, 4_000, ts, args, entropy=args.seed * 10_000 + 9_999, adjoint=False)
    fit_mean, fit_std = check[:, :, 0].mean(1), check[:, :, 0].std(1)
    target_stats: list[adaptive_sde.SolveStats] = []
    simulate(
        OrnsteinUhlenbeck(), args.paths, ts, args, entropy=0, stats=target_stats, adjoint=False
    )
    window = max(1, iterations // 10)
    result = {
        "iterations": iterations,
        "initial_loss": sum(losses[:window]) / window,
        "final_loss": sum(losses[-window:]) / window,
        "max_mean_error": float((fit_mean - mean).abs().max()),
        "max_std_error": float((fit_std - std).abs().max()),
        "nfe_first": nfes[0],
        "nfe_last": nfes[-1],
        "nfe_target": float(target_stats[0].nfe.double().mean()),
        "seconds": seconds,
    }
    print(
        f"loss (mean of {window} steps): {result['initial_loss']:.5f} at the start, "
        f"{result['final_loss']:.5f} at the end; training {seconds:.1f} s"
    )
    print(
        f"fit on 4000 fresh paths: max |mean error| {result['max_mean_error']:.3f}, "
        f"max |std error| {result['max_std_error']:.3f} over t in (0, {T_END}]"
    )
    print(
        f"forward evaluations per solve: {nfes[0]:.0f} at the start, {nfes[-1]:.0f} at the end; "
        f"the target OU itself takes {result['nfe_target']:.0f} ({args.paths} paths, one grid)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "neural_sde.png"
    plot(ts, check, losses, figure)
    print(f"figure: {figure}")
    result["figures"] = [str(figure)]
    return result


def plot(ts: torch.Tensor, ys: torch.Tensor, losses: list[float], path: Path) -> None:
    """Left: the loss. Right: model paths, the model's mean ± std and the target's."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.semilogy(losses)
    left.set(title="training loss (moment matching)", xlabel="Adam step", ylabel="loss")
    t = ts.numpy()
    x = ys[:, :, 0]
    right.plot(t, x[:, :30].numpy(), color="0.8", lw=0.6)
    mean, std = target_moments(ts)
    fit_mean, fit_std = x.mean(1).numpy(), x.std(1).numpy()
    right.plot(t, fit_mean, "C0", label="neural SDE mean ± std")
    right.fill_between(t, fit_mean - fit_std, fit_mean + fit_std, color="C0", alpha=0.25)
    right.plot(t, mean.numpy(), "k--", label="OU target mean ± std")
    right.plot(t, (mean - std).numpy(), "k:", t, (mean + std).numpy(), "k:")
    right.set(title="fit (grey: model paths at the output times)", xlabel="t", ylabel="y")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
