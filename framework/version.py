"""aicc's version, in a module of its own so that any module can name it without importing the
``aicc`` package (whose ``__init__`` imports most of the others)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
