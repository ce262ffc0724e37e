"""ResolutionFlow Escalations server: domain core, persistence, streaming and the gRPC API.

It imports nothing of the gateway, the clients, the benchmark or the command line that
wires them (resolutionflow_cli); ARCHITECTURE.md has the map."""
