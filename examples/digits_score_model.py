"""A score model trained on 8×8 digits, sampled with the adaptive sampler and Euler-Maruyama.

scikit-learn's digits (``sklearn.datasets.load_digits``: 1797 images of 8×8 pixels with 17 grey
levels, shipped with the package, no download) scaled to [-1, 1]. A small MLP learns to predict
the noise of the VP SDE's forward transition x_t = alpha(t) x_0 + sigma(t) noise (the DDPM
"epsilon" loss, Ho et al. 2020, in continuous time as Song et al. 2021); ``score_from_noise``
turns it into the score the samplers need (and into the data prediction D, which the default
sampler steps on). Then, from the same prior draws:

- ``sample``: the adaptive Gotta-Go-Fast sampler in signal-to-noise time (the default) at a few
  rtol, atol = 0.0078 (about one 8-bit level of data in [-1, 1]), and in x (``space="x"``);
- k-diffusion's ``sample_dpm_adaptive`` (eta = 1) and ``sample_dpmpp_2m_sde``, from the real
  library (``adaptive_sde._bench.baselines``), on the same model as a denoiser;
- ``sample_euler_maruyama`` with 1000 steps, twice (two noise seeds: the EM-vs-EM floor), and with
  as many steps as the default sampler's mean evaluations.

Each writes an image grid. The quality measures are deliberately simple, and each comes with its
value on real held-out digits for scale (a model this small on 1500 images is not expected to
match them):

- Fréchet distance between Gaussian fits of the samples and of the held-out digits;
- nearest-neighbour distance: the RMS pixel distance from each image to its closest training
  image (small: looks like a digit; zero: a copy of one);
- classifier confidence: the mean top probability of a logistic regression trained on the
  training images (low: ambiguous blobs), and how many of the ten classes appear;
- class TV: total variation between the classifier's class shares and the training labels'.

A sampler *matches* 1000-step Euler-Maruyama on a measure when it is no worse than EM1000's value
by more than the EM-vs-EM floor (the same measure's difference between the two EM1000 runs); the
closing table gives, per sampler, the fewest evaluations per sample (and model calls) at which it
matches on each measure and on all four.

Run ``python examples/digits_score_model.py`` (``--quick`` for a few hundred training steps and
a few samples); the figures go to ``examples/output/digits_*.png``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn

from adaptive_sde._bench import baselines
from adaptive_sde._bench.gmm import frechet
from adaptive_sde.diffusion import (
    VPSDE,
    prior_sample,
    sample,
    sample_euler_maruyama,
    score_from_noise,
)

MEASURES = ("frechet", "nn_distance", "confidence", "class_tv")
HIGHER_IS_BETTER = {"confidence"}


def load_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Training and held-out images in [-1, 1], shape (n, 1, 8, 8), and the training labels
    (for the classifier of the quality proxy)."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 8 - 1  # grey levels 0..16
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, held = order[:1500], order[1500:]
    x = x.reshape(-1, 1, 8, 8)
    return x[train], x[held], digits.target[train.numpy()]


class NoiseModel(nn.Module):
    """eps_hat(x, t): an MLP on the flattened image and sinusoidal features of t."""

    def __init__(self, hidden: int = 512, frequencies: int = 16) -> None:
        super().__init__()
        self.frequencies: torch.Tensor
        self.register_buffer(
            "frequencies", torch.exp(torch.linspace(0, math.log(1000), frequencies))
        )
        self.net = nn.Sequential(
            nn.Linear(64 + 2 * frequencies, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 64),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angle = t.reshape(-1, 1).to(x.dtype) * self.frequencies
        features = torch.cat([x.reshape(len(x), -1), torch.sin(angle), torch.cos(angle)], 1)
        return self.net(features).reshape(x.shape)


def train(
    model: NoiseModel, data: torch.Tensor, sde: VPSDE, steps: int, seed: int, lr: float
) -> tuple[NoiseModel, list[float]]:
    """Denoising score matching in its noise-prediction form, t ~ U(eps, 1); Adam with a
    cosine-decaying learning rate. Returns the exponential moving average of the weights (what
    diffusion models sample with: it smooths the last steps' noise) and the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    average = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses = []
    for k in range(steps):
        x0 = data[torch.randint(len(data), (128,), generator=gen)]
        t = sde.eps + (sde.T - sde.eps) * torch.rand(len(x0), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        alpha, sigma = sde.alpha(t)[:, None, None, None], sde.sigma(t)[:, None, None, None]
        loss = ((model(alpha * x0 + sigma * noise, t) - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        # The usual warm-up of the average's decay, so that a short run averages its own steps
        # and not the random initial weights.
        decay = min(0.999, (1 + k) / (10 + k))
        with torch.no_grad():
            for mean, weight in zip(average.parameters(), model.parameters(), strict=True):
                mean.lerp_(weight, 1 - decay)
        losses.append(loss.item())
    return average, losses


def quality(
    x: torch.Tensor,
    train_x: torch.Tensor,
    held_x: torch.Tensor,
    classifier: LogisticRegression,
    label_shares: np.ndarray,
) -> dict[str, float]:
    """The Fréchet distance to the held-out digits, the nearest-neighbour distance to the
    training set (RMS per pixel), the classifier's mean top probability, the number of classes
    it sees and their shares' total variation from the labels', and the pixel range."""
    flat = x.reshape(len(x), -1).double()
    distance = torch.cdist(flat, train_x.reshape(len(train_x), -1).double()).min(1).values / 8
    probabilities = classifier.predict_proba(flat.clamp(-1, 1).numpy())
    shares = np.bincount(probabilities.argmax(1), minlength=10) / len(x)
    return {
        "frechet": frechet(flat, held_x.reshape(len(held_x), -1).double()),
        "class_tv": float(0.5 * np.abs(shares - label_shares).sum()),
        "nn_distance": float(distance.mean()),
        "nn_distance_se": float(distance.std() / math.sqrt(len(x))),
        "confidence": float(probabilities.max(1).mean()),
        "confidence_se": float(probabilities.max(1).std(ddof=1) / math.sqrt(len(x))),
        "classes": len(set(probabilities.argmax(1).tolist())),
        "min": float(x.min()),
        "max": float(x.max()),
        "finite": bool(torch.isfinite(x).all()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short training, few samples")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    parser.add_argument("--steps", type=int, help="training steps, default 8000 (--quick: 300)")
    parser.add_argument("--samples", type=int, help="default 512 (--quick: 16)")
    parser.add_argument("--hidden", type=int, default=512, help="width of the MLP")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, sample three ways, measure, save the grids; returns the key numbers."""
    args = parse_args(argv)
    steps = args.steps or (300 if args.quick else 8_000)
    n = args.samples or (16 if args.quick else 512)
    torch.manual_seed(args.seed)
    train_x, held_x, train_y = load_data(args.seed)
    sde = VPSDE()
    start = time.perf_counter()
    model, losses = train(NoiseModel(args.hidden), train_x, sde, steps, args.seed, args.lr)
    train_seconds = time.perf_counter() - start
    window = max(1, steps // 10)
    print(
        f"digits 8x8 in [-1, 1]: {len(train_x)} training, {len(held_x)} held out; MLP noise "
        f"model, VP SDE, {steps} Adam steps in {train_seconds:.0f} s; loss "
        f"{np.mean(losses[:window]):.3f} -> {np.mean(losses[-window:]):.3f}"
    )
    classifier = LogisticRegression(max_iter=2_000).fit(
        train_x.reshape(len(train_x), -1).numpy(), train_y
    )

    model.eval()
    score = score_from_noise(model, sde)
    shape = (n, 1, 8, 8)
    x_T = prior_sample(sde, shape, args.seed)
    label_shares = np.bincount(train_y, minlength=10) / len(train_y)
    rtols = (0.1,) if args.quick else (0.2, 0.1, 0.05)
    runs: dict[str, dict[str, Any]] = {}

    def run(key: str, name: str, draw: Any) -> None:
        start = time.perf_counter()
        x, evals, calls = draw()
        seconds = time.perf_counter() - start
        q = quality(x, train_x, held_x, classifier, label_shares)
        runs[key] = {"name": name, "x": x, "evals_mean": evals, "model_calls": calls, **q}
        runs[key]["seconds"] = seconds

    def ours(**kwargs: Any) -> Any:
        def draw() -> tuple[torch.Tensor, float, int]:
            x, st = sample(score, sde, shape, seed=args.seed, x_T=x_T, **kwargs)
            runs_evals[0] = st.score_evals
            return x, float(st.score_evals.double().mean()), st.model_calls

        return draw

    def euler(steps: int, seed: int) -> Any:
        def draw() -> tuple[torch.Tensor, float, int]:
            x, st = sample_euler_maruyama(score, sde, shape, steps=steps, seed=seed, x_T=x_T)
            return x, float(st.score_evals[0]), st.model_calls

        return draw

    def k_diffusion(name: str, setting: float) -> Any:
        return lambda: baselines.run_k_diffusion(
            name, setting, score.data_prediction, sde, x_T, seed=args.seed
        )

    runs_evals = [torch.zeros(0)]
    with torch.no_grad():
        for rtol in rtols:
            run(f"gtgf rtol={rtol}", f"sample, rtol {rtol}", ours(rtol=rtol))
            if rtol == 0.1:
                default_evals = runs_evals[0]
        run("x-space", "sample, space x, rtol 0.02", ours(space="x"))
        for rtol in (0.1,) if args.quick else (0.1, 0.05):
            run(
                f"dpm_adaptive rtol={rtol}",
                f"dpm_adaptive eta 1, rtol {rtol}",
                k_diffusion("dpm_adaptive eta=1", rtol),
            )
        for steps in (20,) if args.quick else (20, 50, 100):
            run(
                f"dpmpp_2m_sde N={steps}",
                f"dpmpp_2m_sde, {steps} steps",
                k_diffusion("dpmpp_2m_sde", steps),
            )
        budget = round(float(default_evals.double().mean())) - 1  # + 1 denoising step
        run("em1000", "Euler-Maruyama 1000", euler(1000, args.seed))
        run("em1000 again", "Euler-Maruyama 1000, other noise", euler(1000, args.seed + 1))
        run(f"em{budget}", f"Euler-Maruyama {budget}", euler(budget, args.seed))

    real = quality(held_x[:n], train_x, held_x, classifier, label_shares)
    floor = {k: abs(runs["em1000"][k] - runs["em1000 again"][k]) for k in MEASURES}
    header = (
        f"{'sampler':<34} {'evals/sample':>12} {'calls':>6} {'Fréchet':>8} {'NN distance':>13} "
        f"{'confidence':>13} {'class TV':>8} {'classes':>7} {'time s':>7}"
    )
    print(f"{n} samples per sampler, same prior draws")
    print(header)
    print("-" * len(header))
    result: dict[str, Any] = {
        "train_steps": steps,
        "train_seconds": train_seconds,
        "initial_loss": float(np.mean(losses[:window])),
        "final_loss": float(np.mean(losses[-window:])),
        "samples": n,
        "em_budget_steps": budget,
        "floor": floor,
        "held_out": real,
        "figures": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for key, r in runs.items():
        x = r.pop("x")
        result[key] = r
        print(
            f"{r['name']:<34} {r['evals_mean']:12.1f} {r['model_calls']:6d} {r['frechet']:8.2f} "
            f"{_pm(r, 'nn_distance'):>13} {_pm(r, 'confidence'):>13} {r['class_tv']:8.3f} "
            f"{r['classes']:7d} {r['seconds']:7.2f}"
        )
        figure = args.out / f"digits_{key.replace(' ', '_').replace('=', '')}.png"
        save_grid(x[:64], f"{r['name']}: {r['evals_mean']:.0f} evaluations/sample", figure)
        result["figures"].append(str(figure))
    print(
        f"{'held-out real digits':<34} {'-':>12} {'-':>6} {real['frechet']:8.2f} "
        f"{_pm(real, 'nn_distance'):>13} {_pm(real, 'confidence'):>13} {real['class_tv']:8.3f} "
        f"{real['classes']:7d}"
    )
    result["reach_em1000"] = reach_em1000(runs, floor)
    print(
        "\nFewest evaluations per sample matching Euler-Maruyama 1000 (within the EM-vs-EM "
        "floor), per measure and on all four (with the model calls there):"
    )
    print(f"{'sampler':<14} " + " ".join(f"{k:>12}" for k in (*MEASURES, "all", "calls")))
    for family, best in result["reach_em1000"].items():
        print(
            f"{family:<14} "
            + " ".join(f"{_count(best[k]):>12}" for k in (*MEASURES, "all", "calls"))
        )
    figure = args.out / "digits_real.png"
    save_grid(held_x[:64], "held-out real digits", figure)
    result["figures"].append(str(figure))
    print("figures: " + ", ".join(result["figures"]))
    return result


def reach_em1000(
    runs: dict[str, dict[str, Any]], floor: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per sampler family (the key's first word), the fewest evaluations per sample at which
    each measure, and all four, are no worse than EM1000's by more than the floor."""
    reference = runs["em1000"]

    def matches(r: dict[str, Any], key: str) -> bool:
        if key in HIGHER_IS_BETTER:
            return bool(r[key] >= reference[key] - floor[key])
        return bool(r[key] <= reference[key] + floor[key])

    out: dict[str, dict[str, float]] = {}
    for family in ("gtgf", "x-space", "dpm_adaptive", "dpmpp_2m_sde"):
        mine = [r for key, r in runs.items() if key.split(" ")[0] == family]
        best: dict[str, float] = {}
        for key in (*MEASURES, "all"):
            keys = MEASURES if key == "all" else (key,)
            ok = [r for r in mine if all(matches(r, k) for k in keys)]
            best[key] = min((r["evals_mean"] for r in ok), default=math.inf)
            if key == "all":
                best["calls"] = min(
                    (r["model_calls"] for r in ok if r["evals_mean"] == best[key]),
                    default=math.inf,
                )
        out[family] = best
    return out


def _count(value: float) -> str:
    return "-" if math.isinf(value) else f"{value:.0f}"


def _pm(q: dict[str, Any], key: str) -> str:
    """``value±standard error`` of a quality proxy, for the table."""
    return f"{q[key]:.3f}±{q[key + '_se']:.3f}"


def save_grid(x: torch.Tensor, title: str, path: Path) -> None:
    """The images (64 at most) in a square grid, grey levels clipped to [-1, 1] for display."""
    n = len(x)
    side = math.ceil(math.sqrt(n))
    canvas = -torch.ones(side * 9 - 1, side * 9 - 1)  # white, like the digits' background
    for i, image in enumerate(x.clamp(-1, 1)):
        r, c = divmod(i, side)
        canvas[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = image[0]
    fig, ax = plt.subplots(figsize=(5, 5.3))
    ax.imshow(canvas.numpy(), cmap="gray_r", vmin=-1, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
