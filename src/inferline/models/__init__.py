"""Model handlers: one module per framework behind the small `ModelHandler` protocol."""

from __future__ import annotations

from inferline.models.base import LoadedModel, ModelHandler, Prediction, handler_for

__all__ = ["LoadedModel", "ModelHandler", "Prediction", "handler_for"]
