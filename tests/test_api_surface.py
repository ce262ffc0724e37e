"""Every RPC reaches every surface: a REST route (or an SSE stream) and both Python clients.

The routes come from the ``google.api.http`` options, the blocking client from the async
one, so what can be forgotten is the annotation, the stream declaration or the client
method: these checks name the RPC that misses one.
"""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute
from google.protobuf.descriptor import MethodDescriptor

from clients.client import AsyncClient
from clients.sync import Client
from gateway import routes
from gateway.app import create_app
from gateway.settings import GatewaySettings


def rpc_names() -> list[str]:
    names = [m.name for m in routes.api_methods()]
    assert names, "no RPCs found in the API package"
    return names


def client_methods(cls: type) -> dict[str, str]:
    """RPC name -> method name, for the methods marked with ``clients.client.rpc``."""
    found: dict[str, str] = {}
    for name, method in inspect.getmembers(cls, inspect.isfunction):
        marked = getattr(method, "__rpc__", None)
        if marked is not None:
            assert marked not in found, f"{marked} has two methods: {found[marked]}, {name}"
            found[marked] = name
    return found


def test_every_rpc_has_a_rest_route_or_is_a_declared_stream() -> None:
    missing = []
    for method in routes.api_methods():
        binding = routes.http_binding(method)
        if method.name in routes.STREAMS:
            assert method.server_streaming, f"{method.name} is declared a stream but is unary"
            assert binding is None, f"{method.name}: a stream has its SSE route, not an option"
        elif method.name in routes.INTERNAL:
            assert binding is None, f"{method.name} is declared internal but has a route"
        elif binding is None:
            missing.append(method.full_name)
        else:
            assert not method.server_streaming and not method.client_streaming, method.name
    assert not missing, (
        f"RPCs without a google.api.http option (give them one in the .proto): {missing}"
    )
    assert set(routes.STREAMS) <= set(rpc_names()), "STREAMS names an RPC that does not exist"
    assert set(rpc_names()) >= routes.INTERNAL, "INTERNAL names an RPC that does not exist"


def test_routes_are_unique_and_reach_the_app() -> None:
    served = {
        (verb, route.path)
        for route in create_app(GatewaySettings()).routes
        if isinstance(route, APIRoute)
        for verb in route.methods or ()
    }
    seen: set[tuple[str, str]] = set()
    for binding in routes.bindings():
        key = (binding.verb, binding.path)
        assert key not in seen, f"two RPCs on {key}"
        seen.add(key)
        assert key in served, f"{binding.method.name}: {key} is not served"
    for stream in routes.STREAMS.values():
        assert ("GET", stream.path) in served


def test_every_rpc_has_a_method_on_both_python_clients() -> None:
    on_async = client_methods(AsyncClient)
    on_sync = client_methods(Client)
    missing = sorted(set(rpc_names()) - set(on_async))
    assert not missing, f"AsyncClient has no method marked @rpc(...) for: {missing}"
    assert on_sync == on_async, "the blocking Client must offer every AsyncClient RPC method"
    unknown = sorted(set(on_async) - set(rpc_names()))
    assert not unknown, f"client methods marked with RPCs that do not exist: {unknown}"


def test_unannotated_rpc_has_no_binding() -> None:
    """The guard's premise: an RPC without the option yields no route (not a guess)."""
    stream: MethodDescriptor = next(m for m in routes.api_methods() if m.name in routes.STREAMS)
    assert routes.http_binding(stream) is None
