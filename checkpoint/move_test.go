package checkpoint

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"dialsync/change"
)

// The SetOnMove hook runs inside the transaction of every operator move
// (Set, Reset, Rollback): what it writes commits with the move, and its
// error rolls the whole move back (checkpoint, maps and history).
func TestOnMoveSharesTheTransaction(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	s := NewStore(pool, "dialsync", "main")
	if _, err := pool.Exec(ctx, `CREATE TABLE dialsync.hook_log (n serial, what text)`); err != nil {
		t.Fatal(err)
	}
	var fail error
	s.SetOnMove(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO dialsync.hook_log (what) VALUES ('moved')`); err != nil {
			return err
		}
		return fail
	})
	count := func(q string) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	p1 := change.Position{File: "b.000001", Pos: 10}
	if err := s.Set(ctx, p1, "op", "one"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reset(ctx, "op", "two"); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, 0)
	if err != nil || len(h) != 2 {
		t.Fatalf("history = %v, %v", h, err)
	}
	if err := s.Rollback(ctx, h[1].ID, "op", "three"); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM dialsync.hook_log`); n != 3 {
		t.Fatalf("hook ran %d times for Set, Reset and Rollback; want 3", n)
	}

	if err := s.Save(ctx, change.Position{File: "b.000001", Pos: 20}, map[uint64]uint64{1: 100}, nil); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM dialsync.hook_log`); n != 3 {
		t.Fatalf("a Save ran the move hook (%d runs)", n)
	}
	fail = errors.New("hook refuses")
	if err := s.Set(ctx, change.Position{File: "b.000009", Pos: 4}, "op", "four"); !errors.Is(err, fail) {
		t.Fatalf("Set with a failing hook: %v; want its error", err)
	}
	if err := s.Reset(ctx, "op", "five"); !errors.Is(err, fail) {
		t.Fatalf("Reset with a failing hook: %v; want its error", err)
	}
	if cp, found, err := s.Load(ctx); err != nil || !found || cp.Pos.File != "b.000001" || cp.Pos.Pos != 20 {
		t.Fatalf("checkpoint after refused moves = %+v, %v, %v; want b.000001:20", cp, found, err)
	}
	if m, _ := s.Owners(ctx); m[1] != 100 {
		t.Fatalf("a refused move dropped the owners: %v", m)
	}
	if h, _ := s.History(ctx, 0); len(h) != 3 {
		t.Fatalf("a refused move wrote history: %d entries; want 3", len(h))
	}
	if n := count(`SELECT count(*) FROM dialsync.hook_log`); n != 3 {
		t.Fatalf("a refused move kept the hook's write (%d rows)", n)
	}
}

// Without a hook a move leaves the queue mark alone: the mark is the queue
// store's, dropped only through its DropMark (wired with SetOnMove).
func TestMoveWithoutHookKeepsOtherTables(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.queue_marks (pipeline, file, pos, gtid_set, partial_txn, piece) VALUES ('main', 'b.000001', 25, '', '', 0)`); err != nil {
		t.Fatal(err)
	}
	if err := NewStore(pool, "dialsync", "main").Set(ctx, change.Position{File: "b.000001", Pos: 10}, "test", "rewind"); err != nil {
		t.Fatal(err)
	}
	var marks int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dialsync.queue_marks`).Scan(&marks); err != nil || marks != 1 {
		t.Fatalf("queue marks = %d, %v; want 1", marks, err)
	}
}

func TestPruneHistory(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.checkpoint_history (pipeline, at, actor) VALUES
		('main', now() - interval '3 days', 'x'), ('main', now(), 'x'), ('other', now() - interval '3 days', 'x')`); err != nil {
		t.Fatal(err)
	}
	s := NewStore(pool, "dialsync", "main")
	var n int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		if _, err := s.PruneHistory(ctx, tx, -time.Second); err == nil {
			t.Error("PruneHistory accepted a negative age")
		}
		n, err = s.PruneHistory(ctx, tx, 24*time.Hour)
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("PruneHistory = %d, %v; want 1", n, err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dialsync.checkpoint_history`).Scan(&left); err != nil || left != 2 {
		t.Fatalf("history rows left = %d, %v; want 2 (the recent one, the other pipeline's)", left, err)
	}
}
