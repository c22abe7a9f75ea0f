"""End-to-end check of the Dapr state API with the official Dapr Python SDK (PyPI `dapr`).

Run by component/tests/dapr_api.rs with DAPR_GRPC_PORT / DAPR_HTTP_PORT pointing at real
daprd or at `roost-sidecar`, in front of `roost serve`: `python_sdk.py STORE daprd|sidecar`.
Exits non-zero (an AssertionError or an SDK exception) on any difference from what daprd
answers.
"""

import json
import sys
import time

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

STORE = sys.argv[1] if len(sys.argv) > 1 else "statestore"
FRONT = sys.argv[2] if len(sys.argv) > 2 else "daprd"


def expect_grpc_error(code, call):
    try:
        call()
    except DaprGrpcError as err:
        assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
        return err
    raise AssertionError(f"expected a {code} error")


with DaprClient() as d:
    # Save and read back, with the etag.
    d.save_state(STORE, "py-order", json.dumps({"id": 1, "item": "book"}))
    got = d.get_state(STORE, "py-order")
    assert json.loads(got.data) == {"id": 1, "item": "book"}, got.data
    assert got.etag, "an etag is returned"

    # Conditional writes: the current etag wins, a stale one is ABORTED, a malformed one
    # INVALID_ARGUMENT, first-write on an existing key ABORTED.
    d.save_state(STORE, "py-order", json.dumps({"id": 1, "item": "pen"}), etag=got.etag)
    expect_grpc_error(
        grpc.StatusCode.ABORTED,
        lambda: d.save_state(STORE, "py-order", "{}", etag=got.etag),
    )
    expect_grpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: d.save_state(STORE, "py-order", "{}", etag="not-an-etag"),
    )
    expect_grpc_error(
        grpc.StatusCode.ABORTED,
        lambda: d.save_state(
            STORE,
            "py-order",
            "{}",
            options=StateOptions(concurrency=Concurrency.first_write),
        ),
    )
    assert json.loads(d.get_state(STORE, "py-order").data)["item"] == "pen"

    # Bulk save and bulk get; a missing key comes back without data.
    d.save_bulk_state(
        STORE,
        states=[
            StateItem(key="py-a", value=json.dumps({"city": "Oslo", "n": 1})),
            StateItem(key="py-b", value=json.dumps({"city": "Lima", "n": 2})),
        ],
    )
    items = {i.key: i for i in d.get_bulk_state(STORE, keys=["py-a", "py-b", "py-none"]).items}
    assert json.loads(items["py-a"].data)["city"] == "Oslo"
    assert json.loads(items["py-b"].data)["n"] == 2
    assert items["py-none"].data == b"", items["py-none"].data

    # A transaction: all operations apply, in order.
    d.execute_state_transaction(
        STORE,
        operations=[
            TransactionalStateOperation(key="py-t1", data=json.dumps({"city": "Oslo", "n": 3})),
            TransactionalStateOperation(
                key="py-b", data="", operation_type=TransactionOperationType.delete
            ),
        ],
    )
    assert json.loads(d.get_state(STORE, "py-t1").data)["n"] == 3
    assert d.get_state(STORE, "py-b").data == b""

    # A transaction with a stale etag changes nothing.
    etag_t1 = d.get_state(STORE, "py-t1").etag
    try:
        d.execute_state_transaction(
            STORE,
            operations=[
                TransactionalStateOperation(key="py-t2", data="{}"),
                TransactionalStateOperation(key="py-t1", data="{}", etag=str(int(etag_t1) + 100)),
            ],
        )
        raise AssertionError("a stale etag must fail the transaction")
    except DaprGrpcError as err:
        assert err.code() == grpc.StatusCode.INTERNAL, err.code()
    assert d.get_state(STORE, "py-t2").data == b""

    # Query by a JSON field: the keys come back without the app-id prefix.
    response = d.query_state(
        STORE,
        json.dumps({"filter": {"EQ": {"city": "Oslo"}}, "sort": [{"key": "n"}]}),
    )
    keys = [r.key for r in response.results]
    assert keys == ["py-a", "py-t1"], keys
    assert response.results[0].json()["n"] == 1

    # TTL: gone after it expires.
    d.save_state(STORE, "py-ttl", "\"short\"", state_metadata={"ttlInSeconds": "1"})
    assert d.get_state(STORE, "py-ttl").data == b'"short"'
    time.sleep(2.2)
    assert d.get_state(STORE, "py-ttl").data == b"", "expired"

    # Delete with the etag.
    current = d.get_state(STORE, "py-order")
    expect_grpc_error(
        grpc.StatusCode.ABORTED,
        lambda: d.delete_state(STORE, "py-order", etag=str(int(current.etag) + 100)),
    )
    d.delete_state(STORE, "py-order", etag=current.etag)
    assert d.get_state(STORE, "py-order").data == b""

    # Metadata: the store and its capabilities, ACTOR derived.
    meta = d.get_metadata()
    stores = {c.name: c for c in meta.registered_components}
    assert "ACTOR" in stores[STORE].capabilities, stores[STORE].capabilities

    # The sidecar serves state only: another building block answers UNIMPLEMENTED.
    if FRONT == "sidecar":
        err = expect_grpc_error(
            grpc.StatusCode.UNIMPLEMENTED, lambda: d.publish_event("pubsub", "orders", "{}")
        )
        assert "pub/sub" in err.details(), err.details()

print("python sdk: ok")
