"""The ``tokensmith`` command."""
