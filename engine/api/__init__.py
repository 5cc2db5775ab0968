"""Admin HTTP API and (later) the dashboard."""
