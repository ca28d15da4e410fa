"""Token vault: envelope encryption of secrets with per-integration data keys.

This package must not import `gateway`: it is usable (and tested) on its own.
"""
