"""cobrowse-tls-operator: declarative TLS for Genesys Co-browse Server."""

__version__ = "0.1.0"
