"""consent-gateway: forwards a meeting participant's words to AI services only after that participant opted in."""

__version__ = "0.1.0"
