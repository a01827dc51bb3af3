"""The one verification core behind every door: API, webhooks, forward-auth, introspection."""

from tokensmith.verify.core import Identity, Verifier

__all__ = ["Identity", "Verifier"]
