"""The domain core: types, rules and validation. Knows nothing of gRPC, HTTP or SQL."""
