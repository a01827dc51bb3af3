"""Object storage credentials: S3 access keys minted with a token, the SDK token exchange, SigV4 verification."""
