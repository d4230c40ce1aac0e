"""Peak memory of ``sample()`` on a tiny random diffusers ``UNet2DModel`` (16x16, 3 channels,
batch 8), without and with an autograd graph: ``python benchmarks/sampler_memory.py nograd`` and
``python benchmarks/sampler_memory.py grad``, one process each (peak RSS only grows)."""

import resource
import sys
import time

import diffusers
import torch

from adaptive_sde.diffusion import sample, score_from_diffusers

torch.set_num_threads(1)
torch.manual_seed(0)
unet = diffusers.UNet2DModel(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)
score, sde = score_from_diffusers(unet, diffusers.DDPMScheduler(clip_sample=False))
with torch.no_grad():  # warm-up outside the measurement
    unet(torch.randn(8, 3, 16, 16), torch.full((8,), 10.0))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
t0 = time.time()
x, stats = sample(score, sde, (8, 3, 16, 16), generator=0, grad=(sys.argv[1] == "grad"))
dt = time.time() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(
    f"{sys.argv[1]}: peak RSS grew by {(after - before) / 1024:.0f} MiB "
    f"(from {before / 1024:.0f} MiB), "
    f"{dt:.1f} s, {stats.model_calls} model calls, requires_grad={x.requires_grad}"
)
