"""Client libraries for ResolutionFlow Escalations (Python; the browser module is in web/)."""

from clients.streams import resuming_stream

__all__ = ["resuming_stream"]
