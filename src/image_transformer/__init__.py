"""Image Transformer (Parmar et al., 2018) in PyTorch: local self-attention image models with exact likelihoods."""

from .files.pretrained import load_model
from .metrics import bits_per_dim
from .nn.config import ImageTransformerConfig, SuperResolutionConfig
from .nn.model import ImageTransformer
from .nn.superres import SuperResolutionTransformer
from .zoo import PRESETS, preset

__all__ = ["ImageTransformer", "ImageTransformerConfig", "SuperResolutionTransformer", "SuperResolutionConfig",
           "PRESETS", "preset", "bits_per_dim", "load_model"]
__version__ = "0.1.0"
