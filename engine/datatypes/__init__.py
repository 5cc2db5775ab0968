"""Data types: parse bytes into navigable documents and answer senders (ACK, 997, ...)."""
