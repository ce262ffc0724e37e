"""A blocking client for scripts and synchronous services: the async client on its own
event loop, method for method.

The methods are derived from ``AsyncClient``'s RPC methods (those marked with
``clients.client.rpc``), so a new RPC is one method, written once, in the async client:
a coroutine's result is returned, an async iterator becomes a plain iterator.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from clients.client import AsyncClient

T = TypeVar("T")


class Client:
    """Same arguments and methods as ``AsyncClient``; streams are plain iterators."""

    def __init__(self, target: str, **options: Any) -> None:
        self._runner = asyncio.Runner()

        async def build() -> AsyncClient:
            # The channel belongs to the loop it is created on: create it on ours.
            return AsyncClient(target, **options)

        self._client = self._runner.run(build())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def _run(self, coroutine: Awaitable[T]) -> T:
        return self._runner.run(coroutine)  # type: ignore[arg-type]

    def _iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(events.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(events.aclose())  # type: ignore[attr-defined]

    if TYPE_CHECKING:
        # The RPC methods are added below, from AsyncClient's.
        def __getattr__(self, name: str) -> Any: ...


def _blocking(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> Any:
        result = method(self._client, *args, **kwargs)
        if inspect.isawaitable(result):
            return self._run(result)
        return self._iterate(result)

    return call


RPC_METHODS = {
    name: method
    for name, method in inspect.getmembers(AsyncClient, inspect.isfunction)
    if getattr(method, "__rpc__", None)
}
for _name, _method in RPC_METHODS.items():
    setattr(Client, _name, _blocking(_method))
