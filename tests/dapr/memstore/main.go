// Command memstore is a Dapr pluggable state store written the other way people write them:
// Go and grpc-go, on Dapr's own generated component protos
// (github.com/dapr/dapr/pkg/proto/components/v1), with the state in a map in memory, as the
// in-memory example of Dapr's Go components SDK keeps it (that SDK is not served by the
// module proxy here). It is the comparison point for what a served call costs a server
// (benches/callgrind.sh go): not a store to use.
//
//	memstore -socket /path/to/memstore.sock
//
// It serves until its standard input closes or it gets SIGTERM, then removes the socket.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

type item struct {
	data []byte
	etag string
}

type store struct {
	proto.UnimplementedStateStoreServer
	proto.UnimplementedTransactionalStateStoreServer
	mu    sync.RWMutex
	items map[string]item
	seq   uint64
}

func (s *store) Init(context.Context, *proto.InitRequest) (*proto.InitResponse, error) {
	return &proto.InitResponse{}, nil
}

func (s *store) Features(context.Context, *proto.FeaturesRequest) (*proto.FeaturesResponse, error) {
	return &proto.FeaturesResponse{Features: []string{"ETAG", "TRANSACTIONAL"}}, nil
}

func (s *store) Ping(context.Context, *proto.PingRequest) (*proto.PingResponse, error) {
	return &proto.PingResponse{}, nil
}

func (s *store) Get(_ context.Context, req *proto.GetRequest) (*proto.GetResponse, error) {
	s.mu.RLock()
	it, ok := s.items[req.GetKey()]
	s.mu.RUnlock()
	if !ok {
		return &proto.GetResponse{}, nil
	}
	return &proto.GetResponse{Data: it.data, Etag: &proto.Etag{Value: it.etag}}, nil
}

// set and del run with s.mu held.
func (s *store) set(req *proto.SetRequest) error {
	if req.GetEtag() != nil && s.items[req.GetKey()].etag != req.GetEtag().GetValue() {
		return status.Error(codes.FailedPrecondition, "etag mismatch")
	}
	s.seq++
	s.items[req.GetKey()] = item{data: req.GetValue(), etag: strconv.FormatUint(s.seq, 10)}
	return nil
}

func (s *store) del(req *proto.DeleteRequest) error {
	if req.GetEtag() != nil && s.items[req.GetKey()].etag != req.GetEtag().GetValue() {
		return status.Error(codes.FailedPrecondition, "etag mismatch")
	}
	delete(s.items, req.GetKey())
	return nil
}

func (s *store) Set(_ context.Context, req *proto.SetRequest) (*proto.SetResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &proto.SetResponse{}, s.set(req)
}

func (s *store) Delete(_ context.Context, req *proto.DeleteRequest) (*proto.DeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &proto.DeleteResponse{}, s.del(req)
}

func (s *store) BulkGet(_ context.Context, req *proto.BulkGetRequest) (*proto.BulkGetResponse, error) {
	out := &proto.BulkGetResponse{Items: make([]*proto.BulkStateItem, 0, len(req.GetItems()))}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, get := range req.GetItems() {
		bulk := &proto.BulkStateItem{Key: get.GetKey()}
		if it, ok := s.items[get.GetKey()]; ok {
			bulk.Data = it.data
			bulk.Etag = &proto.Etag{Value: it.etag}
		}
		out.Items = append(out.Items, bulk)
	}
	return out, nil
}

func (s *store) BulkSet(_ context.Context, req *proto.BulkSetRequest) (*proto.BulkSetResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, set := range req.GetItems() {
		if err := s.set(set); err != nil {
			return nil, err
		}
	}
	return &proto.BulkSetResponse{}, nil
}

func (s *store) BulkDelete(_ context.Context, req *proto.BulkDeleteRequest) (*proto.BulkDeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, del := range req.GetItems() {
		if err := s.del(del); err != nil {
			return nil, err
		}
	}
	return &proto.BulkDeleteResponse{}, nil
}

// Transact applies every operation or none: the etags are checked on a copy first.
func (s *store) Transact(_ context.Context, req *proto.TransactionalStateRequest) (*proto.TransactionalStateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	saved := make(map[string]*item)
	for _, op := range req.GetOperations() {
		var key string
		if set := op.GetSet(); set != nil {
			key = set.GetKey()
		} else if del := op.GetDelete(); del != nil {
			key = del.GetKey()
		}
		if _, seen := saved[key]; !seen {
			if it, ok := s.items[key]; ok {
				saved[key] = &it
			} else {
				saved[key] = nil
			}
		}
		var err error
		if set := op.GetSet(); set != nil {
			err = s.set(set)
		} else if del := op.GetDelete(); del != nil {
			err = s.del(del)
		}
		if err != nil {
			for k, it := range saved {
				if it == nil {
					delete(s.items, k)
				} else {
					s.items[k] = *it
				}
			}
			return nil, err
		}
	}
	return &proto.TransactionalStateResponse{}, nil
}

func main() {
	socket := flag.String("socket", "", "the Unix socket to serve on")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "memstore: -socket is required")
		os.Exit(2)
	}
	_ = os.Remove(*socket)
	listener, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memstore:", err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	s := &store{items: make(map[string]item)}
	proto.RegisterStateStoreServer(server, s)
	proto.RegisterTransactionalStateStoreServer(server, s)
	reflection.Register(server)
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		server.Stop()
	}()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		server.Stop()
	}()
	_ = server.Serve(listener)
	_ = os.Remove(*socket)
}
