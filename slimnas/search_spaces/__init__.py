"""What can be searched: the EfficientFormer space, its models and its supernet (see ``efficientformer``)."""

from .efficientformer import Arch, SearchSpace

__all__ = ["Arch", "SearchSpace"]
