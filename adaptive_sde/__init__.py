"""adaptive_sde: the Gotta-Go-Fast adaptive SDE solver for PyTorch."""

from adaptive_sde._brownian import BrownianRegister, BrownianSource, TorchsdeBrownian
from adaptive_sde._controller import ConstantStepSize, StepController
from adaptive_sde._integrate import solve
from adaptive_sde._sde import SDEAdapter
from adaptive_sde._solution import Result, Solution, SolveError, SolveStats
from adaptive_sde._step import GottaGoFastStep, StepResult
from adaptive_sde._torchsde import GottaGoFastSolver, register

register()  # method="gtgf" for torchsde.sdeint / sdeint_adjoint

__all__ = [
    "BrownianRegister",
    "BrownianSource",
    "ConstantStepSize",
    "GottaGoFastSolver",
    "GottaGoFastStep",
    "Result",
    "SDEAdapter",
    "Solution",
    "SolveError",
    "SolveStats",
    "StepController",
    "StepResult",
    "TorchsdeBrownian",
    "register",
    "solve",
]

__version__ = "0.1.0"
