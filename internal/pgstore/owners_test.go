package pgstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/internal/queue"
)

// An operator's move of the checkpoint drops this pipeline's queue mark in
// the same transaction (DropMark as the store's SetOnMove hook); another
// pipeline's mark stays, and a refused move keeps the mark.
func TestMoveDropsQueueMark(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	other := NewQueue(pool, "dialsync", "other")
	m := queue.Mark{File: "b.000001", Pos: 25, GTIDSet: "0-1-5"}
	for _, qq := range []*Queue{q, other} {
		if _, err := qq.Apply(ctx, []uint64{1}, nil, &m, nil); err != nil {
			t.Fatal(err)
		}
	}
	s := checkpoint.NewStore(pool, "dialsync", "main")
	s.SetOnMove(q.DropMark)
	if err := s.Set(ctx, change.Position{File: "b.000001", Pos: 10}, "test", "rewind"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := q.Mark(ctx); err != nil || ok {
		t.Fatalf("mark after Set = %v, %v; want none", ok, err)
	}
	if got, ok, err := other.Mark(ctx); err != nil || !ok || got != m {
		t.Fatalf("other pipeline's mark after Set = %+v, %v, %v; want %+v", got, ok, err, m)
	}

	// A move that fails after the hook ran rolls the mark's delete back.
	if _, err := q.Apply(ctx, []uint64{1}, nil, &m, nil); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("refused")
	s.SetOnMove(func(ctx context.Context, tx pgx.Tx) error {
		if err := q.DropMark(ctx, tx); err != nil {
			return err
		}
		return refuse
	})
	if err := s.Reset(ctx, "test", "reset"); !errors.Is(err, refuse) {
		t.Fatalf("Reset = %v; want the hook's error", err)
	}
	if got, ok, err := q.Mark(ctx); err != nil || !ok || got != m {
		t.Fatalf("mark after a refused Reset = %+v, %v, %v; want %+v", got, ok, err, m)
	}
}

// Prune deletes the checkpoint history (through its owner) and the dead
// letters in one transaction: when either part fails, neither is deleted.
func TestPruneIsOneTransaction(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	old := time.Now().Add(-48 * time.Hour)
	if err := q.AddDeadLetter(ctx, DeadLetter{At: old, File: "bin.000001", Pos: 400, Table: "claims", PrimaryKey: "7", Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.checkpoint_history (pipeline, at, actor) VALUES ('main', now() - interval '3 days', 'x')`); err != nil {
		t.Fatal(err)
	}
	s := checkpoint.NewStore(pool, "dialsync", "main")
	var ran bool
	failing := func(ctx context.Context, tx pgx.Tx, olderThan time.Duration) (int64, error) {
		ran = true
		if _, err := s.PruneHistory(ctx, tx, olderThan); err != nil {
			return 0, err
		}
		// The transaction fails after the history's delete.
		_, err := tx.Exec(ctx, `SELECT 1/0`)
		return 0, err
	}
	if _, _, err := q.Prune(ctx, 24*time.Hour, failing); err == nil || !ran {
		t.Fatalf("Prune with a failing transaction: %v (ran %v)", err, ran)
	}
	var h, d int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM dialsync.checkpoint_history), (SELECT count(*) FROM dialsync.dead_letters)`).Scan(&h, &d); err != nil || h != 1 || d != 1 {
		t.Fatalf("after a failed Prune: %d history, %d dead letters, %v; want 1, 1", h, d, err)
	}
	if _, _, err := q.Prune(ctx, -time.Hour, s.PruneHistory); err == nil {
		t.Fatal("Prune accepted a negative age")
	}
	hn, dn, err := q.Prune(ctx, 24*time.Hour, nil)
	if err != nil || hn != 0 || dn != 1 {
		t.Fatalf("Prune without a history pruner = %d, %d, %v; want 0, 1", hn, dn, err)
	}
}
