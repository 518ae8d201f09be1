"""Shared test setup: one torch thread (the tests' tensors are small; CI has 2 cores) and a
non-interactive matplotlib backend."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
