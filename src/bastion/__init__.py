"""bastion: a reverse proxy that keeps applications working once they move behind it."""

__version__ = "0.1.0"
