"""The domain core: types, rules, validation and who may do what (policy.py). Knows
nothing of gRPC, HTTP or SQL (tests/test_layers.py checks; ARCHITECTURE.md)."""
