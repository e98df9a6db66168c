"""hwcompress compression engine: models, data, policies, applying them, evaluation, search."""

__version__ = "0.1.0"
