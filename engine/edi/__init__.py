"""EDI trading: partners, control numbers and outbound X12 (uses connectors and data types)."""
