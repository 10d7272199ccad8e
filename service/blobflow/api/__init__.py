"""The HTTP API of §9: executions, logs, cancel, manual runs, definitions and deltas."""
