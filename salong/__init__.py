"""salong: text-to-music generation with latent diffusion (Stable Audio 2 style)."""

__version__ = "0.1.0"
