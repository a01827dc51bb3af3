"""Organizations and users."""
