"""Score-based generative models on top of the adaptive solver (Jolicoeur-Martineau et al. 2021)."""

from adaptive_sde.diffusion._adapters import (
    ModelAdapter,
    classifier_free_guidance,
    ddpm_schedule,
    score_from_data,
    score_from_denoiser,
    score_from_diffusers,
    score_from_noise,
    score_from_score,
    score_from_velocity,
)
from adaptive_sde.diffusion._forward import (
    EDMSDE,
    VESDE,
    VPSDE,
    DiscreteVPSDE,
    ForwardSDE,
    SubVPSDE,
)
from adaptive_sde.diffusion._kdiffusion import sample_gtgf
from adaptive_sde.diffusion._mixture import GaussianMixture, Spread, component_spread
from adaptive_sde.diffusion._reverse import ReverseSDE
from adaptive_sde.diffusion._sample import (
    SampleStats,
    prior_sample,
    sample,
    sample_euler_maruyama,
    sample_probability_flow,
)

__all__ = [
    "EDMSDE",
    "VESDE",
    "VPSDE",
    "DiscreteVPSDE",
    "ForwardSDE",
    "GaussianMixture",
    "ModelAdapter",
    "ReverseSDE",
    "SampleStats",
    "Spread",
    "SubVPSDE",
    "classifier_free_guidance",
    "component_spread",
    "ddpm_schedule",
    "prior_sample",
    "sample",
    "sample_euler_maruyama",
    "sample_gtgf",
    "sample_probability_flow",
    "score_from_data",
    "score_from_denoiser",
    "score_from_diffusers",
    "score_from_noise",
    "score_from_score",
    "score_from_velocity",
]
