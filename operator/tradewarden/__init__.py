"""tradewarden: a Kubernetes operator that runs trading bots as custom resources, safely.

Layers (checked by import-linter, see pyproject.toml):
``api`` is the leaf; ``strategies`` and ``exchange`` build on it; ``runner`` is the bot process;
``controller`` is the kopf operator and never touches the exchange.
"""

__version__ = "0.1.0"
