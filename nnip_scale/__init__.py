"""nnip-scale: train neural interatomic potentials and measure how they scale.

Kept light on purpose: importing ``nnip_scale`` loads nothing heavy (no torch, no native code).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
