"""grpcio (grpc-c) over `roost serve`'s Unix socket, run by component/tests/dapr_api.rs.

grpc-c puts the socket path in `:authority` (percent-encoded), which HTTP/2 servers refuse as
an authority; `roost serve` rewrites it (component/src/authority.rs). This uses grpcio's
default channel for several calls on one connection (later requests refer to the first one's
headers through the HPACK dynamic table), and the documented fallback setting
`grpc.default_authority=localhost`. Exits non-zero on any failure.
"""

import sys

import grpc

path = sys.argv[1]
SERVICE = "/dapr.proto.components.v1.StateStore/"


def call(channel, method, request, instance):
    rpc = channel.unary_unary(
        SERVICE + method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    return rpc(request, timeout=5, metadata=(("x-component-instance", instance),))


for name, options in (("default", []), ("localhost", [("grpc.default_authority", "localhost")])):
    with grpc.insecure_channel("unix://" + path, options=options) as channel:
        call(channel, "Ping", b"", name)
        call(channel, "Init", b"", name)
        # SetRequest{key: "k", value: name}, then GetRequest{key: "k"}: GetResponse.data.
        value = name.encode()
        call(channel, "Set", b"\x0a\x01k\x12" + bytes([len(value)]) + value, name)
        for _ in range(3):
            got = call(channel, "Get", b"\x0a\x01k", name)
            assert got.startswith(b"\x0a" + bytes([len(value)]) + value), got
    print(f"{name} authority: ok")
print("grpcio: ok")
