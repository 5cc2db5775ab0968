"""Transforms: turn a parsed document into the content sent to destinations."""
