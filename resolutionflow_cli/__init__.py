"""The ``resolutionflow`` command line: the composition root of the product.

It sits above every other package because it wires them together: the gRPC server
(``server``), the HTTP gateway (``gateway``), the stream client (``clients``, for
``watch``) and the benchmark (``bench``). Nothing below imports it, so ``server`` stays
free of the gateway, the clients and the benchmark (see ARCHITECTURE.md).
"""
