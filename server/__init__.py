"""ResolutionFlow Escalations server: domain core, persistence, gRPC API and CLI."""
