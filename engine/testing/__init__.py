"""Conformance suites and helpers shipped with Junction, so plug-in authors can reuse them.

Each suite is a plain class of pytest tests: subclass it in a test module (name the
subclass ``Test...``) and provide the fixture it documents.
"""
