"""Which event loop a serving process runs on.

uvloop (libuv) spends fewer CPU cycles per socket event than asyncio's selector loop; the
server, the gateway and the benchmark's bare ceilings all run on it (so that a ratio to a
ceiling compares like with like), unless ``RF_EVENT_LOOP=asyncio`` or uvloop is not
installed. grpc.aio and uvicorn both run on either loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    if os.environ.get("RF_EVENT_LOOP", "uvloop").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
