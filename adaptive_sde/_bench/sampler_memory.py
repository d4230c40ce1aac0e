"""Peak memory of :func:`~adaptive_sde.diffusion.sample` without and with an autograd graph.

A small random diffusers ``UNet2DModel`` (16x16, 3 channels, blocks (32, 64), one layer per
block, batch 8) and the DDPM schedule, sampled once with ``grad=False`` (the default: no graph,
as diffusers' pipelines) and once with ``grad=True`` (the graph kept, to differentiate the
samples). Each runs in a process of its own, since a process's peak resident set size only
grows; the figure is the growth of the peak over the ``sample`` call, after a warm-up call of
the UNet. Needs diffusers (``pip install "adaptive-sde[diffusers]"``).
"""

from __future__ import annotations

import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adaptive_sde._bench.report import format_table, pyplot

NAME = "sampler_memory"
TITLE = "Peak memory of sample() without and with an autograd graph"
MODES = ("nograd", "grad")
BATCH, SIZE = 8, 16
DIFFUSERS_MISSING = 'sampler_memory needs diffusers: pip install "adaptive-sde[diffusers]"'


def _peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB on Linux


def measure(mode: str, batch: int, size: int) -> dict[str, Any]:
    """One ``sample`` call in this process: the growth of its peak RSS (MiB), the seconds and
    the model calls."""
    import torch

    try:
        import diffusers
    except ImportError:
        raise SystemExit(DIFFUSERS_MISSING) from None
    from adaptive_sde.diffusion import sample, score_from_diffusers

    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    score, sde = score_from_diffusers(unet, diffusers.DDPMScheduler(clip_sample=False))
    shape = (batch, 3, size, size)
    with torch.no_grad():  # warm-up outside the measurement
        unet(torch.randn(shape), torch.full((batch,), 10.0))  # type: ignore[operator]
    before = _peak_mib()
    start = time.perf_counter()
    x, stats = sample(score, sde, shape, generator=0, grad=(mode == "grad"))
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "peak_before_mib": before,
        "peak_growth_mib": _peak_mib() - before,
        "seconds": seconds,
        "model_calls": int(stats.model_calls),
        "requires_grad": bool(x.requires_grad),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Both modes, each in a fresh Python process. ``quick`` changes nothing: the run is already
    a few seconds beyond starting the processes, and a smaller batch grows the peak by less than
    the memory the process already holds (no growth at all at 4 of 8x8)."""
    if importlib.util.find_spec("diffusers") is None:
        raise SystemExit(DIFFUSERS_MISSING)
    batch, size = BATCH, SIZE
    rows = []
    for mode in MODES:
        done = subprocess.run(
            [sys.executable, "-m", __name__, mode, str(batch), str(size)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sampler_memory {mode} failed:\n{done.stderr.strip()}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"batch": batch, "size": size, "rows": rows}


def tables(result: dict[str, Any], markdown: bool = False) -> list[tuple[str, str]]:
    """One row per mode: the growth of the peak RSS, seconds, model calls."""
    rows = [
        (
            f"grad={r['mode'] == 'grad'}",
            f"{r['peak_growth_mib']:.0f}",
            f"{r['peak_before_mib']:.0f}",
            f"{r['seconds']:.1f}",
            str(r["model_calls"]),
        )
        for r in result["rows"]
    ]
    header = ("sample(...)", "peak RSS growth MiB", "peak before MiB", "seconds", "model calls")
    b, s = result["batch"], result["size"]
    caption = f"peak memory of one sample call, random UNet2DModel, batch {b} of 3x{s}x{s}"
    return [(caption, format_table(header, rows, markdown))]


def plot(result: dict[str, Any], path: Path) -> Path:
    """Bars: the growth of the peak RSS and the seconds, per mode."""
    plt = pyplot()
    fig, (mem, secs) = plt.subplots(1, 2, figsize=(6, 3), dpi=150)
    names = [f"grad={r['mode'] == 'grad'}" for r in result["rows"]]
    mem.bar(names, [r["peak_growth_mib"] for r in result["rows"]], color=["C0", "C1"])
    mem.set(ylabel="peak RSS growth (MiB)")
    secs.bar(names, [r["seconds"] for r in result["rows"]], color=["C0", "C1"])
    secs.set(ylabel="seconds")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":  # one measurement, in the process run() starts
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
