"""The model: tensors in, tensors out. Generation orders and blocks (order), embeddings, attention and its cached
step (attention, static_step), the output distributions, the Image Transformer and its super-resolution
encoder-decoder."""

from .config import ImageTransformerConfig, SuperResolutionConfig
from .model import ImageTransformer
from .sampling import Sampling
from .superres import SuperResolutionTransformer

__all__ = ["ImageTransformerConfig", "SuperResolutionConfig", "ImageTransformer", "SuperResolutionTransformer",
           "Sampling"]
