"""``resolutionflow bench``: the real stack against bare grpc.aio / sse-starlette ceilings.

Modules:
- ``cli``      the command-line arguments and entry point (imports nothing heavy);
- ``runner``   the orchestrator: starts every process, runs the phases, prints one JSON object;
- ``loadgen``  the load generator, always a process of its own (``python -m bench.loadgen``);
- ``bare_grpc`` / ``bare_sse``  the ceilings: pre-made bytes fanned out of in-memory queues;
- ``fake_llm`` an OpenAI-compatible endpoint that answers after a fixed delay;
- ``procs``    /proc readings (CPU seconds, RSS) and child-process handling;
- ``wire``     what the ceilings send: protobuf wire format and SSE frames built by hand.
"""
