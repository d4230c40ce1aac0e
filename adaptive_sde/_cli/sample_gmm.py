"""``adaptive-sde sample-gmm``: sample a Gaussian mixture with its exact score, on one process or
on many (``torchrun --nproc-per-node 2 -m adaptive_sde sample-gmm --samples 20000 --out DIR``).

Launched by torchrun, every process joins the torch.distributed group (gloo on CPUs, NCCL on
GPUs), computes its share of the shards with :func:`adaptive_sde.distributed.sample_distributed`
and writes them under ``--out``; rank 0 gathers the samples into ``DIR/samples.pt``, writes
``DIR/summary.json`` and prints samples per second and the samples' quality against the exact
mixture. Rerunning with the same arguments after a failure computes only the missing shards.
The samples are the same for any number of processes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from adaptive_sde.diffusion import (
    VESDE,
    VPSDE,
    ForwardSDE,
    GaussianMixture,
    SubVPSDE,
    component_spread,
)
from adaptive_sde.distributed import (
    assigned_shards,
    plan_shards,
    rank_and_size,
    sample_distributed,
)

SDES: dict[str, type[ForwardSDE]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sample-gmm",
        help="sample a Gaussian mixture with its exact score, across torchrun processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=20_000,
        help="number of samples (not --n: torchrun would read that as one of its own options)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for shards, results")
    parser.add_argument("--shard-size", type=positive_int, default=1024, help="samples per shard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dim", type=positive_int, default=2, help="2: the 8-mode ring; more: 4 random components"
    )
    parser.add_argument("--sde", choices=sorted(SDES), default="vp")
    parser.add_argument("--rtol", type=float, default=0.02)
    parser.add_argument("--atol", type=float, default=0.0078)
    parser.add_argument(
        "--device",
        type=device_name,
        default=None,
        help="default: cuda:<LOCAL_RANK> if CUDA is available, else cpu",
    )
    parser.set_defaults(run=run)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def device_name(text: str) -> str:
    """An argparse type: a name torch.device accepts (cpu, cuda, cuda:1, ...)."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"not a torch device: {text!r} (cpu, cuda, cuda:1, ...)"
        ) from None
    return text


def run(args: argparse.Namespace) -> None:
    device = _device(args.device)
    launched = "WORLD_SIZE" in os.environ
    if launched and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        _sample(args, device)
    finally:
        if launched and dist.is_initialized():
            dist.destroy_process_group()


def _sample(args: argparse.Namespace, device: torch.device) -> None:
    rank, world = rank_and_size()
    mixture = GaussianMixture.ring() if args.dim == 2 else GaussianMixture.random(args.dim)
    # float64 scores on the CPU; float32 on a GPU, where float64 is slow
    mixture = mixture.to(device, torch.float64 if device.type == "cpu" else torch.float32)
    sde = SDES[args.sde]()
    if world > 1:
        dist.barrier()
    shards = plan_shards(args.samples, args.shard_size)
    mine = assigned_shards(shards, rank, world)
    bar = tqdm(total=len(mine), desc=f"rank {rank} shards", unit="shard", disable=rank != 0)
    start = time.perf_counter()
    try:
        result = sample_distributed(
            mixture.score_fn(sde),
            sde,
            (mixture.dim,),
            args.samples,
            seed=args.seed,
            shard_size=args.shard_size,
            out=args.out,
            device=device,
            rtol=args.rtol,
            atol=args.atol,
            on_shard=lambda shard, computed: bar.update(),
        )
    except BaseException:
        bar.leave = False  # the error's one line, not a bar stopped at 0%
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    # Samples per second counts what this run computed, not the shards it found finished.
    sizes = {shard.index: shard.size for shard in shards}
    fresh = torch.tensor([float(sum(sizes[i] for i in result.computed))], dtype=torch.float64)
    if world > 1:
        fresh = fresh.to(device if device.type == "cuda" else "cpu")
        dist.all_reduce(fresh)
    computed_now = int(fresh.item())
    if rank != 0 or result.outputs is None:
        return
    x = result.outputs["x"]
    torch.save(x, args.out / "samples.pt")
    cpu_mixture = mixture.to("cpu", torch.float64)
    tv = cpu_mixture.mode_tv(x)
    spread = component_spread(cpu_mixture, x)
    worst_z = max(max(abs(s.z_variance), abs(s.z_mean)) for s in spread)
    stats = result.stats
    summary = {
        "processes": world,
        "device": str(device),
        "samples": args.samples,
        "seconds": seconds,
        "computed_now": computed_now,
        "samples_per_second": computed_now / seconds,
        "score_evals_per_sample": stats["score_evals"] / stats["samples"],
        "rows_evaluated": stats["rows_evaluated"],
        "mode_tv": tv,
        "worst_component_z": worst_z,
        "stats": stats,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.samples} samples of a {mixture.dim}-D mixture ({args.sde.upper()} SDE, rtol "
        f"{args.rtol}), {world} process{'es' if world > 1 else ''} on {device.type}: "
        f"{computed_now} computed now in {seconds:.2f} s, {computed_now / seconds:.0f} samples/s"
    )
    print(
        f"score evaluations per sample {summary['score_evals_per_sample']:.1f}; mode weights "
        f"TV {tv:.4f}; worst component z-score {worst_z:.2f}; "
        f"{args.samples - computed_now} found finished in {args.out}"
    )
    print(f"samples: {args.out / 'samples.pt'}; manifest: {result.manifest}")


def _device(name: str | None) -> torch.device:
    if name is not None:
        return torch.device(name)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")
