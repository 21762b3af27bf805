"""Thin adapters, one per service: the only modules that talk to the servers' clients."""
