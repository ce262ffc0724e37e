"""The HTTP gateway: REST + Server-Sent Events over the gRPC API (a translator only)."""
