"""The gRPC transport: servicers that translate, interceptors, and the server factory."""
