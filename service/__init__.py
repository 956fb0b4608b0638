"""Rotor: an authorization microservice with rotating refresh-token families."""

__version__ = "0.1.0"
