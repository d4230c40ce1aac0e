"""A latent-diffusion pipeline as diffusers users build it, sampled by ``adaptive_sde``.

The pieces of a Stable-Diffusion-style pipeline, in miniature and with random weights (nothing
is downloaded): a ``diffusers.AutoencoderKL`` whose latents the model works in, a
``UNet2DConditionModel`` conditioned on "prompt" embeddings through cross-attention, and the
``DDPMScheduler`` it would have been trained with. Then, as a pipeline does:

1. prompt embeddings per image (here random vectors standing in for a text encoder's output)
   and the embedding of the empty prompt for classifier-free guidance;
2. ``score_from_diffusers(unet, scheduler, guidance_scale=..., unconditional_kwargs=...)``:
   the scheduler's own schedule as a VP SDE, and guidance in one batched UNet call;
3. ``sample(score, sde, latent_shape, model_kwargs={"encoder_hidden_states": prompts})``: the
   adaptive sampler in signal-to-noise time, every latent on its own steps, the conditioning
   following the rows that are evaluated;
4. the latents decoded by the VAE and saved as an image grid.

With random weights the images are noise, so the point is the plumbing and the cost: the
script checks that image ``i`` sampled alone (``sample_ids=[i]``, its own prompt) equals row
``i`` of the batch, and reports evaluations per sample, UNet calls and the rows they evaluated.
Load trained weights with ``from_pretrained`` in place of the constructors to sample a real
model the same way.

Run ``python examples/latent_diffusion.py`` (``--quick`` for fewer images); the grid goes to
``examples/output/latent_diffusion.png``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import diffusers
import matplotlib.pyplot as plt
import torch

from adaptive_sde.diffusion import sample, score_from_diffusers


def tiny_pipeline(seed: int) -> tuple[Any, Any, Any]:
    """A random AutoencoderKL (32x32 RGB images, 4 latent channels at 8x8), a conditional UNet
    on those latents with 16-dimensional prompt embeddings, and a DDPM scheduler."""
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).eval()
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    ).eval()
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=False
    )
    return vae, unet, scheduler


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="four images")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    parser.add_argument("--images", type=int, help="default 16 (--quick: 4)")
    parser.add_argument("--guidance", type=float, default=5.0, help="guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Sample, decode and save the grid; returns the key numbers."""
    args = parse_args(argv)
    n = args.images or (4 if args.quick else 16)
    vae, unet, scheduler = tiny_pipeline(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    prompts = torch.randn(n, 7, 16, generator=gen)  # a text encoder's output, 7 tokens each
    empty = torch.zeros(1, 7, 16)  # the empty prompt, shared by every row
    score, sde = score_from_diffusers(
        unet,
        scheduler,
        guidance_scale=args.guidance,
        unconditional_kwargs={"encoder_hidden_states": empty},
    )
    shape = (n, 4, 8, 8)
    start = time.perf_counter()
    latents, stats = sample(
        score, sde, shape, seed=args.seed, model_kwargs={"encoder_hidden_states": prompts}
    )
    seconds = time.perf_counter() - start
    # Image 1 alone, with its own prompt, is row 1 of the batch.
    alone, _ = sample(
        score,
        sde,
        (1, 4, 8, 8),
        seed=args.seed,
        sample_ids=torch.tensor([1]),
        model_kwargs={"encoder_hidden_states": prompts[1:2]},
    )
    alone_error = float((alone[0] - latents[1]).abs().max())
    with torch.no_grad():
        images = vae.decode(latents / vae.config.scaling_factor).sample
    summary = stats.summary()
    print(
        f"{n} latents {tuple(shape[1:])} -> images {tuple(images.shape[1:])}, guidance "
        f"{args.guidance}: {summary['score_evals_mean']:.1f} evaluations per sample "
        f"(max {summary['score_evals_max']}), {summary['model_calls']} UNet calls on "
        f"{summary['rows_evaluated']} rows (each call evaluates a row twice: conditional and "
        f"unconditional), {seconds:.1f} s; image 1 alone differs from its batch row by "
        f"{alone_error:.1e}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "latent_diffusion.png"
    save_grid(images, f"random-weight latent diffusion, guidance {args.guidance}", figure)
    print(f"figure: {figure}")
    return {
        "images": n,
        "image_shape": tuple(images.shape[1:]),
        "finite": bool(torch.isfinite(images).all()),
        "alone_error": alone_error,
        **summary,
        "seconds": seconds,
        "figures": [str(figure)],
    }


def save_grid(images: torch.Tensor, title: str, path: Path) -> None:
    """RGB images in [-1, 1] (clipped) in a square grid."""
    side = math.ceil(math.sqrt(len(images)))
    size = images.shape[-1]
    canvas = torch.ones(3, side * (size + 2), side * (size + 2))
    for i, image in enumerate(images.clamp(-1, 1)):
        r, c = divmod(i, side)
        y, x = r * (size + 2), c * (size + 2)
        canvas[:, y : y + size, x : x + size] = (image + 1) / 2
    fig, ax = plt.subplots(figsize=(5, 5.3))
    ax.imshow(canvas.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
