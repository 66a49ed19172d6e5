"""jaxnets: a functional neural-network framework for JAX."""

__version__ = "0.1.0"
