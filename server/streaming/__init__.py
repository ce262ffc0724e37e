"""Live streams: per-account fan-out of the event log, resume, reset and heartbeats."""
