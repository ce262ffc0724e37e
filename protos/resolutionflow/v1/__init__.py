"""Generated protobuf and gRPC code for the resolutionflow.v1 API (regenerate with `make proto`)."""
