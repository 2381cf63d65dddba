"""Image Transformer (Parmar et al., 2018) in PyTorch: local self-attention image models with exact likelihoods."""

from .checkpoint import load_model
from .config import PRESETS, ImageTransformerConfig, preset
from .metrics import bits_per_dim
from .model import ImageTransformer
from .superres import SuperResolutionConfig, SuperResolutionTransformer

__all__ = ["ImageTransformer", "ImageTransformerConfig", "SuperResolutionTransformer", "SuperResolutionConfig",
           "PRESETS", "preset", "bits_per_dim", "load_model"]
__version__ = "0.1.0"
