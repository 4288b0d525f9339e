"""openeas: a self-hosted model inference service platform that behaves like PAI-EAS."""

__version__ = "0.1.0"
