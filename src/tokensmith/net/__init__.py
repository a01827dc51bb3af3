"""Outbound network access: every request tokensmith makes to a URL someone else chose goes through here."""
