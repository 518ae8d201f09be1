"""physml's differentiable particle-mesh simulation: ICs, 2LPT, PM N-body, FoF halos."""

from .fof import Groups, friends_of_friends
from .ics import linear_field, linear_modes, lpt_displacements, white_noise
from .mesh import cic_paint, cic_readout, cross_power_spectrum, overdensity, power_spectrum
from .nbody import ForceSolver, nbody
from .run import SimulationConfig, SimulationResult, initial_conditions, simulate

__all__ = [
    "ForceSolver",
    "Groups",
    "SimulationConfig",
    "SimulationResult",
    "cic_paint",
    "cic_readout",
    "cross_power_spectrum",
    "friends_of_friends",
    "initial_conditions",
    "linear_field",
    "linear_modes",
    "lpt_displacements",
    "nbody",
    "overdensity",
    "power_spectrum",
    "simulate",
    "white_noise",
]
