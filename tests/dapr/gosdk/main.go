// Command gosdk drives Dapr's state API with the official Go SDK (github.com/dapr/go-sdk), the
// way a Go app does: save and get with etags, first-write, bulk, delete with etags, bulk
// delete, transactions, query and TTL. component/tests/dapr_api.rs runs it against real daprd
// (and roost-sidecar) in front of `roost serve`, with the address in DAPR_GRPC_ENDPOINT.
// It exits non-zero, naming the step, on the first answer that is not what daprd promises.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const store = "statestore"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go sdk:", err)
		os.Exit(1)
	}
	fmt.Println("go sdk: ok")
}

func expectCode(step string, err error, want codes.Code) error {
	if err == nil {
		return fmt.Errorf("%s: no error, want %v", step, want)
	}
	if got := status.Code(err); got != want {
		return fmt.Errorf("%s: %v (%v), want %v", step, got, err, want)
	}
	return nil
}

func run() error {
	address := os.Getenv("DAPR_GRPC_ENDPOINT")
	client, err := dapr.NewClientWithAddress(address)
	if err != nil {
		return fmt.Errorf("connect %s: %w", address, err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Save and get, with the etag.
	if err := client.SaveState(ctx, store, "go-order", []byte(`{"id":1}`), nil); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	item, err := client.GetState(ctx, store, "go-order", nil)
	if err != nil || string(item.Value) != `{"id":1}` || item.Etag == "" {
		return fmt.Errorf("get: %v %+v", err, item)
	}
	// Conditional writes: the current etag wins; a stale one is ABORTED, an invalid one
	// INVALID_ARGUMENT; first-write on an existing key ABORTED, on a new one it succeeds.
	if err := client.SaveStateWithETag(ctx, store, "go-order", []byte(`{"id":2}`), item.Etag, nil); err != nil {
		return fmt.Errorf("save with etag: %w", err)
	}
	if err := expectCode("stale etag", client.SaveStateWithETag(ctx, store, "go-order", []byte(`{}`), item.Etag, nil), codes.Aborted); err != nil {
		return err
	}
	if err := expectCode("invalid etag", client.SaveStateWithETag(ctx, store, "go-order", []byte(`{}`), "not-a-number", nil), codes.InvalidArgument); err != nil {
		return err
	}
	firstWrite := dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite)
	if err := expectCode("first-write existing", client.SaveState(ctx, store, "go-order", []byte(`{}`), nil, firstWrite), codes.Aborted); err != nil {
		return err
	}
	if err := client.SaveState(ctx, store, "go-new", []byte(`1`), nil, firstWrite); err != nil {
		return fmt.Errorf("first-write new: %w", err)
	}

	// Bulk save and bulk get (a missing key comes back without data).
	if err := client.SaveBulkState(ctx, store,
		&dapr.SetStateItem{Key: "go-a", Value: []byte(`{"city":"Oslo","n":1}`)},
		&dapr.SetStateItem{Key: "go-b", Value: []byte(`{"city":"Lima","n":2}`)},
	); err != nil {
		return fmt.Errorf("bulk save: %w", err)
	}
	bulk, err := client.GetBulkState(ctx, store, []string{"go-a", "go-b", "go-missing"}, nil, 2)
	if err != nil || len(bulk) != 3 {
		return fmt.Errorf("bulk get: %v %d items", err, len(bulk))
	}
	byKey := map[string]*dapr.BulkStateItem{}
	for _, b := range bulk {
		byKey[b.Key] = b
	}
	if string(byKey["go-a"].Value) != `{"city":"Oslo","n":1}` || byKey["go-b"].Etag == "" || len(byKey["go-missing"].Value) != 0 {
		return fmt.Errorf("bulk get items: %+v %+v %+v", byKey["go-a"], byKey["go-b"], byKey["go-missing"])
	}

	// Transaction: applied in order; a stale etag anywhere changes nothing.
	ops := []*dapr.StateOperation{
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: "go-t1", Value: []byte(`{"city":"Oslo","n":3}`)}},
		{Type: dapr.StateOperationTypeDelete, Item: &dapr.SetStateItem{Key: "go-b"}},
	}
	if err := client.ExecuteStateTransaction(ctx, store, nil, ops); err != nil {
		return fmt.Errorf("transaction: %w", err)
	}
	if gone, _ := client.GetState(ctx, store, "go-b", nil); len(gone.Value) != 0 {
		return fmt.Errorf("transaction delete: go-b still %q", gone.Value)
	}
	stale := []*dapr.StateOperation{
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: "go-t2", Value: []byte(`1`)}},
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: "go-t1", Value: []byte(`1`), Etag: &dapr.ETag{Value: "999999"}}},
	}
	if err := expectCode("stale transaction", client.ExecuteStateTransaction(ctx, store, nil, stale), codes.Internal); err != nil {
		return err
	}
	if none, _ := client.GetState(ctx, store, "go-t2", nil); len(none.Value) != 0 {
		return fmt.Errorf("a failed transaction wrote go-t2")
	}

	// Query, sorted, keys without the app-id prefix; paged by one.
	q := `{"filter":{"EQ":{"city":"Oslo"}},"sort":[{"key":"n"}]}`
	result, err := client.QueryStateAlpha1(ctx, store, q, nil)
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	var keys []string
	for _, r := range result.Results {
		keys = append(keys, r.Key)
	}
	if fmt.Sprint(keys) != "[go-a go-t1]" {
		return fmt.Errorf("query keys: %v", keys)
	}
	page, err := client.QueryStateAlpha1(ctx, store, `{"filter":{"EQ":{"city":"Oslo"}},"sort":[{"key":"n"}],"page":{"limit":1}}`, nil)
	if err != nil || len(page.Results) != 1 || page.Results[0].Key != "go-a" || page.Token == "" {
		return fmt.Errorf("query page 1: %v %+v", err, page)
	}
	next, err := client.QueryStateAlpha1(ctx, store, `{"filter":{"EQ":{"city":"Oslo"}},"sort":[{"key":"n"}],"page":{"limit":1,"token":"`+page.Token+`"}}`, nil)
	if err != nil || len(next.Results) != 1 || next.Results[0].Key != "go-t1" {
		return fmt.Errorf("query page 2: %v %+v", err, next)
	}
	var doc map[string]any
	if err := json.Unmarshal(next.Results[0].Value, &doc); err != nil || doc["n"] != 3.0 {
		return fmt.Errorf("query value: %v %v", err, doc)
	}

	// TTL: ttlExpireTime in the metadata, then gone.
	if err := client.SaveState(ctx, store, "go-ttl", []byte(`"short"`), map[string]string{"ttlInSeconds": "1"}); err != nil {
		return fmt.Errorf("save with ttl: %w", err)
	}
	ttl, err := client.GetState(ctx, store, "go-ttl", nil)
	if err != nil || ttl.Metadata["ttlExpireTime"] == "" {
		return fmt.Errorf("ttlExpireTime: %v %+v", err, ttl)
	}
	if _, err := time.Parse(time.RFC3339, ttl.Metadata["ttlExpireTime"]); err != nil {
		return fmt.Errorf("ttlExpireTime is not RFC 3339: %w", err)
	}
	time.Sleep(2200 * time.Millisecond)
	if gone, _ := client.GetState(ctx, store, "go-ttl", nil); len(gone.Value) != 0 {
		return fmt.Errorf("expired record still readable")
	}

	// Delete with a stale etag is ABORTED; with the right one the key is gone; bulk delete.
	current, _ := client.GetState(ctx, store, "go-order", nil)
	n, _ := strconv.Atoi(current.Etag)
	staleEtag := &dapr.ETag{Value: strconv.Itoa(n + 100)}
	if err := expectCode("stale delete", client.DeleteStateWithETag(ctx, store, "go-order", staleEtag, nil, nil), codes.Aborted); err != nil {
		return err
	}
	if err := client.DeleteStateWithETag(ctx, store, "go-order", &dapr.ETag{Value: current.Etag}, nil, nil); err != nil {
		return fmt.Errorf("delete with etag: %w", err)
	}
	if err := client.DeleteBulkState(ctx, store, []string{"go-a", "go-t1", "go-new"}, nil); err != nil {
		return fmt.Errorf("bulk delete: %w", err)
	}
	left, err := client.GetBulkState(ctx, store, []string{"go-order", "go-a", "go-t1", "go-new"}, nil, 1)
	if err != nil {
		return fmt.Errorf("bulk get after delete: %w", err)
	}
	for _, b := range left {
		if len(b.Value) != 0 {
			return fmt.Errorf("%s survived its delete", b.Key)
		}
	}
	return nil
}
