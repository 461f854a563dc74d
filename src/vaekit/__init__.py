"""vaekit: train, evaluate, explore and apply Variational Autoencoders, built on PyTorch.

import vaekit
run = vaekit.train()                      # reference VAE on built-in MNIST
model = vaekit.load(run.path)
z_mean, z_log_var = model.encode(x)       # x: (B, 1, 28, 28) in [0, 1]
images = model.sample(16)
"""

from vaekit.api import *  # noqa: F403  (the public API)
from vaekit.api import __all__ as __all__
from vaekit.core.version import VERSION as __version__  # noqa: F401
