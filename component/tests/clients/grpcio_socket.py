"""grpcio (grpc-c) over `roost serve`'s Unix socket, run by component/tests/dapr_api.rs.

grpc-c puts the socket path in `:authority`, which the HTTP/2 layer of `roost serve` refuses
(RST_STREAM PROTOCOL_ERROR); with `grpc.default_authority=localhost` (docs/component.md) every
call works. Prints one line per channel and exits non-zero if the documented setting fails.
"""

import sys

import grpc

path = sys.argv[1]
results = {}
for name, options in (("default", []), ("localhost", [("grpc.default_authority", "localhost")])):
    channel = grpc.insecure_channel("unix://" + path, options=options)
    ping = channel.unary_unary(
        "/dapr.proto.components.v1.StateStore/Ping",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        ping(b"", timeout=5)
        results[name] = "ok"
    except grpc.RpcError as err:
        results[name] = f"{err.code()} {err.details()}"
    print(f"{name} authority: {results[name]}")
    channel.close()
assert results["localhost"] == "ok", results
print("grpcio: ok")
