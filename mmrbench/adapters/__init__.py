"""Model adapters: one module per provider behind a lazy registry."""
from mmrbench.adapters.base import (GenerationConfig, ImagePart, Message, ModelAPI, Request, Response,
                                    TextPart, Usage)
from mmrbench.adapters.registry import instantiate, providers, register_provider

__all__ = ["GenerationConfig", "ImagePart", "Message", "ModelAPI", "Request", "Response", "TextPart", "Usage",
           "instantiate", "providers", "register_provider"]
