"""ResolutionFlow Escalations public API package (generated code lives in ``v1``)."""
