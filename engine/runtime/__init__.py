"""The engine: channel lifecycle, pipelines, destination queues, retry and recovery."""
