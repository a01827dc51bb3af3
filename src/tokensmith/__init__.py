"""tokensmith: self-hosted API access tokens for a cloud platform."""

__version__ = "0.1.0"
