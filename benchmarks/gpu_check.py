"""GPU check: samples per second and time outside the model for ``sample`` on a GPU.

``python benchmarks/gpu_check.py`` samples a 3072-D Gaussian mixture (the size of a 32x32 RGB
image) with its exact score through :func:`adaptive_sde.diffusion.sample` at batch 256 to 8192,
with ``sync_every`` 1 and 8, and reports for each run:

- samples per second (wall time, the device synchronised at both ends);
- the time spent outside the model: the run's wall time minus the time the same sequence of
  model calls takes on its own (the calls' batch sizes are recorded in the run and replayed
  afterwards, so the measured run itself adds no synchronisation);
- the host synchronisations the run made, counted by CUDA's sync debug mode (warnings).

Without a GPU it says so and exits with status 0; ``--device cpu --quick`` runs the same
measurement on small sizes (the tests run it that way, so the script stays working). Results go
to ``benchmarks/results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import _common  # noqa: F401  (sys.path)
import torch
from _common import save

from adaptive_sde.diffusion import VPSDE, GaussianMixture, sample


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RecordingScore:
    """The exact score, recording the batch size of every call (host-side: no synchronisation)."""

    def __init__(self, mixture: GaussianMixture, sde: VPSDE) -> None:
        self.score = mixture.score_fn(sde)
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.score(x, t)

    def replay_seconds(self, dim: int, device: torch.device) -> float:
        """Wall time of the recorded calls alone, on inputs of the same sizes."""
        largest = max(self.batches)
        x = torch.randn(largest, dim, device=device)
        t = torch.rand(largest, device=device) * 0.99 + 0.005
        _synchronise(device)
        start = time.perf_counter()
        for n in self.batches:
            self.score(x[:n], t[:n])
        _synchronise(device)
        return time.perf_counter() - start


def measure(
    batch: int, dim: int, sync_every: int, device: torch.device, seed: int = 0
) -> dict[str, float]:
    mixture = GaussianMixture.random(dim, modes=4).to(device, torch.float32)
    sde = VPSDE()
    score = RecordingScore(mixture, sde)
    _synchronise(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        _, stats = sample(
            score, sde, (batch, dim), generator=seed, device=device, sync_every=sync_every
        )
        _synchronise(device)
        seconds = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    model_seconds = score.replay_seconds(dim, device)
    evals = float(stats.score_evals.double().mean())
    return {
        "batch": batch,
        "dim": dim,
        "sync_every": sync_every,
        "seconds": seconds,
        "samples_per_second": batch / seconds,
        "score_evals_per_sample": evals,
        "model_calls": stats.model_calls,
        "rows_evaluated": stats.rows_evaluated,
        "model_seconds": model_seconds,
        "outside_seconds": seconds - model_seconds,
        "outside_fraction": (seconds - model_seconds) / seconds,
        "host_syncs": syncs if device.type == "cuda" else -1,
    }


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    args = parser.parse_args(argv)
    if args.device is None and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing measured (use --device cpu to try it)")
        return []
    device = torch.device(args.device or "cuda")
    batches, dim = ((16, 64), 64) if args.quick else ((256, 1024, 4096, 8192), 3072)
    measure(batches[0], dim, 8, device)  # warm-up: kernels, allocator
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}; {dim}-D mixture, VP SDE, rtol 0.02")
    header = (
        f"{'batch':>6} {'sync':>5} {'samples/s':>10} {'evals':>7} {'total s':>8} "
        f"{'model s':>8} {'outside':>8} {'syncs':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for batch in batches:
        for sync_every in (1, 8):
            row = measure(batch, dim, sync_every, device)
            rows.append(row)
            print(
                f"{batch:>6} {sync_every:>5} {row['samples_per_second']:>10.1f} "
                f"{row['score_evals_per_sample']:>7.1f} {row['seconds']:>8.2f} "
                f"{row['model_seconds']:>8.2f} {row['outside_fraction']:>7.0%} "
                f"{row['host_syncs']:>6}"
            )
    path = save("gpu_check", {"device": name, "rows": rows})
    print(f"saved {path}")
    return rows


if __name__ == "__main__":
    main()
