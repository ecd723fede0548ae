"""consent-gateway: a participant's words reach AI services only after that participant opted in."""

__version__ = "0.1.0"
