"""Core model of Junction: messages, channel definitions, specs, registry, errors.

Nothing in this package imports another part of ``engine``.
"""
