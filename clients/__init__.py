"""Python client for ResolutionFlow Escalations (the browser module lives in ``web/``).

    from clients import AsyncClient, AlreadyPickedUp

The surface is this module; the submodules are private and may change.
"""

from clients.client import AsyncClient, TokenProvider
from clients.errors import (
    AlreadyPickedUp,
    Conflict,
    FieldViolation,
    InvalidArgument,
    NotFound,
    NotHolder,
    PermissionDenied,
    ResolutionFlowError,
    Unauthenticated,
    Unavailable,
)
from clients.streams import resuming_stream
from clients.sync import Client

__all__ = [
    "AlreadyPickedUp",
    "AsyncClient",
    "Client",
    "Conflict",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "NotHolder",
    "PermissionDenied",
    "ResolutionFlowError",
    "TokenProvider",
    "Unauthenticated",
    "Unavailable",
    "resuming_stream",
]
