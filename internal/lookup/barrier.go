package lookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// barrierWaitSeconds bounds how long CommitBarrier waits for a row lock.
const barrierWaitSeconds = 3

// BarrierTimeouts counts barriers that gave up waiting on a row lock. The
// row is then held by a later, still open transaction (ours were already
// in their commit phase when their events reached us), whose own event is
// processed when it commits.
func (l *Lookup) BarrierTimeouts() uint64 { return l.barrierTimeouts.Load() }

// CommitBarrier returns once the transactions that changed these rows
// (table -> primary keys) are committed in the storage engine and visible
// to new reads.
//
// Why: MySQL and MariaDB write a transaction to the binlog, and binlog
// readers may receive it, BEFORE the storage engine commit makes it
// visible (two-phase commit: binlog first, then InnoDB). A lookup right
// after the event can read the state from before the change, and the queue
// row would be stuck one change behind (found by the fault-injection
// suite). Until its InnoDB commit completes the writer holds exclusive
// locks on the rows it changed, so a shared-mode locking read of those
// rows waits for exactly that, and nothing else we know of. Locking reads
// are allowed in a read-only session and need only SELECT; the shared
// locks are released as soon as the autocommit SELECT ends.
func (l *Lookup) CommitBarrier(ctx context.Context, rows map[string][]uint64) error {
	tables := make([]string, 0, len(rows))
	for t := range rows {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, t := range tables {
		ids := slices.Clone(rows[t])
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for _, batch := range batches(ids) {
			// Table names come from the tracked set (handlers), never
			// from input; quote anyway.
			q := "SELECT id FROM `" + t + "` WHERE id IN (" + idList(batch) + ") LOCK IN SHARE MODE"
			// The server's lock wait (innodb_lock_wait_timeout, set per
			// session) ends the wait first; the deadline is for servers
			// that refuse that variable (the driver closes the connection
			// when the context ends).
			qctx, cancel := context.WithTimeout(ctx, (barrierWaitSeconds+2)*time.Second)
			r, err := l.db.QueryContext(qctx, q)
			if err == nil {
				for r.Next() {
				}
				err = r.Err()
				r.Close()
			}
			expired := qctx.Err() != nil && ctx.Err() == nil
			cancel()
			if err != nil {
				var my *mysql.MyError
				if errors.As(err, &my) && my.Code == mysql.ER_LOCK_WAIT_TIMEOUT || expired {
					// Held by a later open transaction: ours are committed.
					l.log.Warn("commit barrier: a row is locked by a later open transaction; going on",
						"table", t, "wait_seconds", barrierWaitSeconds)
					l.barrierTimeouts.Add(1)
					continue
				}
				return fmt.Errorf("commit barrier on %s: %w", t, err)
			}
		}
	}
	return nil
}
