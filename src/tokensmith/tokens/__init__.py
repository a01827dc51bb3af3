"""API access tokens: creation, listing, revocation."""
