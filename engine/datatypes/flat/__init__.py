"""Flat files: the ``delimited`` (CSV, pipe, tab) and ``fixed-width`` data types.

A layout, declared in the channel or in a layout file, names the fields, types them (str,
int, decimal, date; implied decimals), says which rows to skip before a column header and
which record types a file has (header, data, trailer records with a count check). A
message is a whole file (one document of records) or, with ``per_row``, one data record
with the file's header context. See docs/datatypes/flat.md.
"""

from engine.datatypes.flat.spec import DELIMITED, FIXED_WIDTH, DelimitedConfig, FixedWidthConfig

__all__ = ["DELIMITED", "FIXED_WIDTH", "DelimitedConfig", "FixedWidthConfig"]
