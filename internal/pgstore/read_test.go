package pgstore

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"dialsync/internal/queue"
)

func TestReadQueueRow(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	at := tp("2024-01-02T03:04:05.123456Z")
	if _, err := q.Apply(ctx, nil, []queue.Row{{UserID: 5, OpenClaims: 2, PendingRequirements: 3, OldestPendingAt: at}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	r, found, err := ReadQueueRow(ctx, pool, "dialsync", 5)
	if err != nil || !found || r.UserID != 5 || r.OpenClaims != 2 || r.PendingRequirements != 3 || !r.OldestPendingAt.Equal(*at) ||
		r.EnteredAt.IsZero() || !r.EnteredAt.Equal(r.UpdatedAt) || r.EnteredAt.Location().String() != "UTC" {
		t.Fatalf("ReadQueueRow = %+v, %v, %v", r, found, err)
	}
	for _, u := range []uint64{6, math.MaxUint64} {
		if _, found, err := ReadQueueRow(ctx, pool, "dialsync", u); err != nil || found {
			t.Fatalf("ReadQueueRow(%d) = %v, %v; want not found", u, found, err)
		}
	}
	var pgErr *pgconn.PgError
	if _, _, err := ReadQueueRow(ctx, pool, "nowhere", 5); !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Fatalf("ReadQueueRow on an unmigrated schema: %v; want undefined_table", err)
	}
}
