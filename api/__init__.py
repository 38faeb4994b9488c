"""The HTTP API: JSON commands and queries over the domain and the read models."""
