"""Host-side callbacks with Keras's names and hooks."""

from jaxnets.callbacks.base import Callback, CallbackList

__all__ = ["Callback", "CallbackList"]
