"""The web console: server-rendered pages at ``/`` that call the services directly."""

from tokensmith.console.routes import install

__all__ = ["install"]
