"""Neural-network layers and the Module base class."""
from . import functional
from .layers import (GELU, BatchNorm1d, Dropout, LayerNorm, Linear, ReLU, Residual, SelfAttention, Sequential,
                     Sigmoid, Tanh, TransformerBlock)
from .module import Module, Parameter

__all__ = ["Module", "Parameter", "Linear", "ReLU", "Tanh", "GELU", "Sigmoid", "Dropout", "BatchNorm1d",
           "LayerNorm", "Sequential", "Residual", "SelfAttention", "TransformerBlock", "functional"]
