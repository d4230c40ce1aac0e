"""GPU check: the solver's overhead and the diffusion sampler's throughput on a CUDA device.

Never required: without a CUDA device it says so and measures nothing. On one (the first, or
``device=``) it measures two things:

- the three parts of :mod:`adaptive_sde._bench.overhead` on the device (per-evaluation overhead
  against torchsde's ``euler`` and ``srk``, the counter-based generator against ``torch.randn``,
  the Brownian register against ``torch.randn`` and torchsde's ``BrownianInterval``), timed by
  ``torch.utils.benchmark``, whose timer synchronises the device;
- :func:`adaptive_sde.diffusion.sample` on a 3072-D Gaussian mixture (the size of a 32x32 RGB
  image) with its exact score, at batch 256 to 8192 and ``sync_every`` 1 and 8: samples per
  second (wall time, the device synchronised at both ends); the time spent outside the model,
  the run's wall time minus the time the same sequence of model calls takes on its own (the
  calls' batch sizes are recorded in the run and replayed afterwards, so the measured run
  itself adds no synchronisation); and the host synchronisations the run made, counted by
  CUDA's sync debug mode (its warnings).

``run(quick=True, device="cpu")`` runs the same measurements small on the CPU (the tests do, so
the check stays working). From a shell: ``python -m adaptive_sde._bench.gpu_check [--device
cpu] [--quick] [--out DIR]``, or ``adaptive-sde bench gpu_check``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from adaptive_sde._bench import overhead
from adaptive_sde._bench.report import format_table, pyplot, save_json
from adaptive_sde.diffusion import VPSDE, GaussianMixture, sample

NAME = "gpu_check"
TITLE = "GPU check: solver overhead and sampler throughput on a CUDA device"
NO_DEVICE = (
    "no CUDA device here; nothing measured (run(device='cpu') or --device cpu measures the same "
    "on the CPU)"
)
SAMPLER_BATCHES, QUICK_SAMPLER_BATCHES = (256, 1024, 4096, 8192), (16, 64)
SAMPLER_DIM, QUICK_SAMPLER_DIM = 3072, 64
SYNC_EVERY = (1, 8)


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


def measure_sampler(
    batch: int, dim: int, sync_every: int, device: torch.device, seed: int = 0
) -> dict[str, float]:
    """One run of ``sample`` on a ``dim``-D mixture: throughput, time outside the model, host
    synchronisations (-1 off CUDA, where there are none to count)."""
    mixture = GaussianMixture.random(dim, modes=4).to(device, torch.float32)
    sde = VPSDE()
    score = RecordingScore(mixture, sde)
    _synchronise(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            start = time.perf_counter()
            _, stats = sample(
                score, sde, (batch, dim), generator=seed, device=device, sync_every=sync_every
            )
            _synchronise(device)
            seconds = time.perf_counter() - start
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    model_seconds = score.replay_seconds(dim, device)
    return {
        "batch": batch,
        "dim": dim,
        "sync_every": sync_every,
        "seconds": seconds,
        "samples_per_second": batch / seconds,
        "score_evals_per_sample": float(stats.score_evals.double().mean()),
        "model_calls": stats.model_calls,
        "rows_evaluated": stats.rows_evaluated,
        "model_seconds": model_seconds,
        "outside_seconds": seconds - model_seconds,
        "outside_fraction": (seconds - model_seconds) / seconds,
        "host_syncs": syncs if device.type == "cuda" else -1,
    }


def run(quick: bool = False, device: str | torch.device | None = None) -> dict[str, Any]:
    """Both parts on ``device`` (default: CUDA when there is a device, else nothing measured,
    with ``note`` saying so). ``quick``: small sizes."""
    if device is None and not torch.cuda.is_available():
        return {"device": None, "note": NO_DEVICE, "sampler": [], "overhead": None}
    dev = torch.device(device or "cuda")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    batches = QUICK_SAMPLER_BATCHES if quick else SAMPLER_BATCHES
    dim = QUICK_SAMPLER_DIM if quick else SAMPLER_DIM
    measure_sampler(batches[0], dim, 8, dev)  # warm-up: kernels, allocator
    rows = [measure_sampler(b, dim, s, dev) for b in batches for s in SYNC_EVERY]
    return {
        "device": str(dev),
        "device_name": name,
        "torch": torch.__version__,
        "sampler": rows,
        "overhead": overhead.run(quick=quick, device=dev),
    }


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """The sampler's table and the overhead module's tables, or the note that nothing was
    measured."""
    if result.get("device") is None:
        return [("GPU check", result.get("note", NO_DEVICE))]
    header = (
        "batch",
        "sync_every",
        "samples/s",
        "evals",
        "total s",
        "model s",
        "outside",
        "host syncs",
    )
    rows = [
        (
            f"{r['batch']}",
            f"{r['sync_every']}",
            f"{r['samples_per_second']:.1f}",
            f"{r['score_evals_per_sample']:.1f}",
            f"{r['seconds']:.2f}",
            f"{r['model_seconds']:.2f}",
            f"{r['outside_fraction']:.0%}",
            f"{r['host_syncs']}",
        )
        for r in result["sampler"]
    ]
    dim = result["sampler"][0]["dim"] if result["sampler"] else "?"
    caption = (
        f"diffusion.sample on {result['device_name']}: a {dim}-D Gaussian mixture, VP SDE, "
        "exact score, default tolerance (host syncs -1: not counted off CUDA)"
    )
    out = [(caption, format_table(header, rows, markdown, left=0))]
    if result.get("overhead") is not None:
        device = result["device_name"]
        out += [(f"{c} ({device})", t) for c, t in overhead.tables(result["overhead"], markdown)]
    return out


def plot(result: dict[str, Any], path: Path) -> Path:
    """The overhead module's figure for the device; a figure with the note when nothing was
    measured."""
    if result.get("overhead") is not None:
        return overhead.plot(result["overhead"], path)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(overhead.FIGURE_WIDTH, 1.5), dpi=overhead.FIGURE_DPI)
    ax.axis("off")
    ax.text(0.5, 0.5, result.get("note", NO_DEVICE), ha="center", va="center", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line: run, print the tables, write ``gpu_check.json`` and ``.png`` into
    ``--out`` (when something was measured)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for JSON and PNG")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, device=args.device)
    for caption, table in tables(result):
        print(f"\n{caption}\n{table}")
    if result["device"] is not None:
        json_path = save_json(args.out / f"{NAME}.json", {"quick": args.quick, **result})
        print(f"\nwritten: {json_path}, {plot(result, args.out / f'{NAME}.png')}")
    return result


if __name__ == "__main__":
    main()
