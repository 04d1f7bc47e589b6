package dstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/config"
)

// The machine's servers, as config.Default() names them.
var (
	MachineRedis = config.Default().Redis.Addr
	MachineNATS  = config.Default().NATS.URL
)

// Redis returns a client on the machine's Redis. At cleanup it deletes
// every key under prefix (the test's own) and closes the client.
func Redis(tb testing.TB, prefix string) *redis.Client {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: MachineRedis})
	tb.Cleanup(func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return rdb
}

// JetStream connects to the NATS server at url ("" = the machine's), and
// keeps reconnecting every 100ms for as long as the test runs (a test may
// restart its server). At cleanup it deletes stream (unless "") and closes
// the connection.
func JetStream(tb testing.TB, url, stream string) jetstream.JetStream {
	tb.Helper()
	if url == "" {
		url = MachineNATS
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if stream != "" {
			_ = js.DeleteStream(context.Background(), stream)
		}
		nc.Close()
	})
	return js
}
