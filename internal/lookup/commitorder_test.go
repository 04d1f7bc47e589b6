package lookup

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"dialsync/internal/dev/testenv"
)

// committed is one binlog transaction of the test: the row it set and the
// value it set it to (values only grow per row).
type committed struct{ id, v int64 }

// invisible returns the transactions of batch whose value a read (id ->
// current value) does not show yet.
func invisible(batch []committed, read map[int64]int64) []committed {
	var out []committed
	for _, c := range batch {
		if read[c.id] < c.v {
			out = append(out, c)
		}
	}
	return out
}

// TestInvisibleCatchesMissingRows: the check of TestMariaDBCommitsInBinlogOrder
// reports an earlier transaction whose row does not show its value.
func TestInvisibleCatchesMissingRows(t *testing.T) {
	batch := []committed{{1, 5}, {2, 7}, {3, 2}}
	if got := invisible(batch, map[int64]int64{1: 5, 2: 6, 3: 9}); len(got) != 1 || got[0] != (committed{2, 7}) {
		t.Errorf("invisible = %v, want [{2 7}]", got)
	}
	if got := invisible(batch, map[int64]int64{1: 5, 3: 2}); len(got) != 1 || got[0].id != 2 {
		t.Errorf("a row missing from the read: invisible = %v", got)
	}
	if got := invisible(batch, map[int64]int64{1: 6, 2: 7, 3: 2}); len(got) != 0 {
		t.Errorf("every row visible: invisible = %v", got)
	}
}

// TestMariaDBCommitsInBinlogOrder checks on a real MariaDB what lets the
// commit barrier lock one row per batch there (docs/design.md, the commit
// barrier): InnoDB commits in binlog order, so once the last transaction of
// a batch received from the binlog is visible, every earlier one is.
//
// Many writers commit single-row autocommit UPDATEs (each row's value only
// grows) while a binlog reader takes the transactions as they arrive, in
// batches of whatever arrived (as the apply loop does). Per batch: a plain
// read of every row of the batch (is any not visible yet?),
// then the barrier on the last row ONLY (a shared-mode locking read), then
// a plain read of every row of the batch: every earlier transaction must
// be visible. The test also requires the race to have been seen (rows
// still invisible when the batch was complete), so the reader ran at the
// head, where a violation could show.
func TestMariaDBCommitsInBinlogOrder(t *testing.T) {
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 4242, Args: []string{"--max-connections=100"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, err := sql.Open("mysql", my.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE DATABASE ord"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", my.DSN("ord"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const writers, perWriter = 16, 50
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	var vals []string
	for id := 1; id <= writers*perWriter; id++ {
		vals = append(vals, fmt.Sprintf("(%d, 0)", id))
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES "+strings.Join(vals, ",")); err != nil {
		t.Fatal(err)
	}
	var file string
	var pos uint32
	var ignore [2]sql.NullString
	if err := db.QueryRowContext(ctx, "SHOW MASTER STATUS").Scan(&file, &pos, &ignore[0], &ignore[1]); err != nil {
		t.Fatal(err)
	}

	// The reader's sessions: the barrier and the reads, like the lookup
	// sessions (autocommit, so each read sees the latest commits).
	reader, err := sql.Open("mysql", my.DSN("ord"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	reader.SetMaxOpenConns(1)
	if _, err := reader.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 3"); err != nil {
		t.Fatal(err)
	}

	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: 4343, Flavor: mysql.MariaDBFlavor, Host: "127.0.0.1", Port: uint16(my.Port()), User: "root",
	})
	defer syncer.Close()
	stream, err := syncer.StartSync(mysql.Position{Name: file, Pos: pos})
	if err != nil {
		t.Fatal(err)
	}

	// Writers: each owns perWriter rows and bumps them in turn.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes atomic.Int64
	werr := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := db.PrepareContext(ctx, "UPDATE t SET v = v + 1 WHERE id = ?")
			if err != nil {
				werr <- err
				return
			}
			defer st.Close()
			for i := 0; !stop.Load(); i++ {
				if _, err := st.ExecContext(ctx, int64(1+w*perWriter+i%perWriter)); err != nil {
					werr <- err
					return
				}
				writes.Add(1)
				// Paced (~1,600 tx/s in all) so the reader keeps up and
				// works at the head, where commits are still in flight.
				time.Sleep(time.Duration(rand.IntN(20_000)) * time.Microsecond)
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	// The reader: transactions in binlog order, batched by arrival.
	var batch []committed
	var cur *committed
	var batches, raced, unseen, checked int
	readRows := func(ids []int64) (map[int64]int64, error) {
		var in []string
		for _, id := range ids {
			in = append(in, fmt.Sprint(id))
		}
		rows, err := reader.QueryContext(ctx, "SELECT id, v FROM t WHERE id IN ("+strings.Join(in, ",")+")")
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := map[int64]int64{}
		for rows.Next() {
			var id, v int64
			if err := rows.Scan(&id, &v); err != nil {
				return nil, err
			}
			out[id] = v
		}
		return out, rows.Err()
	}
	check := func() {
		last := batch[len(batch)-1]
		ids := make([]int64, len(batch))
		for i, c := range batch {
			ids[i] = c.id
		}
		before, err := readRows(ids)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(invisible(batch, before)); n > 0 {
			raced++ // events arrived before their commits were visible
			unseen += n
		}
		r, err := reader.QueryContext(ctx, fmt.Sprintf("SELECT id FROM t WHERE id = %d LOCK IN SHARE MODE", last.id))
		if err != nil {
			t.Fatalf("barrier: %v", err)
		}
		for r.Next() {
		}
		r.Close()
		read, err := readRows(ids)
		if err != nil {
			t.Fatal(err)
		}
		if bad := invisible(batch, read); len(bad) > 0 {
			t.Fatalf("batch %d of %d transactions: after the barrier on the last one (row %d = %d), %d earlier ones are not visible, e.g. row %d should be >= %d but reads %d",
				batches, len(batch), last.id, last.v, len(bad), bad[0].id, bad[0].v, read[bad[0].id])
		}
		batches++
		checked += len(batch)
		batch = batch[:0]
	}
	const minFor, maxFor = 8 * time.Second, 60 * time.Second
	start := time.Now()
	for {
		if el := time.Since(start); el > maxFor || (el > minFor && raced >= 20) {
			break
		}
		select {
		case err := <-werr:
			t.Fatal(err)
		default:
		}
		// Take what arrived; a batch ends when nothing more is waiting
		// (or at a random size), as the apply loop forms them.
		wait := 2 * time.Second
		if len(batch) > 0 && cur == nil {
			wait = 200 * time.Microsecond
		}
		ectx, ecancel := context.WithTimeout(ctx, wait)
		ev, err := stream.GetEvent(ectx)
		ecancel()
		if err != nil {
			if ectx.Err() != nil && ctx.Err() == nil && len(batch) > 0 {
				check()
				continue
			}
			t.Fatalf("binlog: %v", err)
		}
		switch e := ev.Event.(type) {
		case *replication.RowsEvent:
			if string(e.Table.Schema) != "ord" || len(e.Rows) != 2 {
				continue
			}
			after := e.Rows[1]
			c := committed{id: after[0].(int64), v: after[1].(int64)}
			cur = &c
		case *replication.XIDEvent:
			if cur != nil {
				batch = append(batch, *cur)
				cur = nil
				if len(batch) >= 2+rand.IntN(400) {
					check()
				}
			}
		}
	}
	t.Logf("%d writes; %d transactions checked in %d batches; in %d batches %d transactions were still invisible when the batch was complete (before the barrier), and all were visible after it",
		writes.Load(), checked, batches, raced, unseen)
	if batches < 100 {
		t.Fatalf("only %d batches checked", batches)
	}
	if raced == 0 {
		t.Fatal("the reader never saw a transaction before its commit was visible: it ran behind the writers, where the check cannot fail")
	}
}
