"""courier: the command-line client of artifactcourier (HTTP only, no server code)."""

__version__ = "0.1.0"
