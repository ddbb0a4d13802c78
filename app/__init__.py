"""authgate: a small, fast Kubernetes external-auth validator."""

__version__ = "0.1.0"
