package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/dev/benchkit"
)

// The catch-up scenario: with dialsync stopped, write a backlog of row
// changes over all five tables; read it once with a no-op canal reader
// (canal.Stream, the same decode path as dialsync, a handler that only
// counts) and once with dialsync itself, every effect on, from the same
// start position (the stopped pipeline's checkpoint) to the same head;
// then publish the notices dialsync sent with a bare publisher, the sink
// limit (sinkref.go).

const backlogMix = "10% single-row transactions (user status and requirement status toggles, 4 connections), " +
	"one large transaction of 30% of the rows (claim_requirements by id range, applied in pieces), " +
	"the rest multi-row UPDATEs of 500 rows (requirements 30% with status toggles, claims 25%, users 20%, " +
	"vehicle packages 15%, addresses 10%), writers on all tables concurrently"

// chunkTables are the multi-row share of the backlog: table, share
// (percent), row count, and SET clauses (every one changes every row it
// matches, so affected rows = binlog row changes).
func (b *bench) chunkTables() []chunkTable {
	c := b.o.size.Counts()
	bump := func(col string) string {
		return col + " = COALESCE(" + col + ", '2024-01-01 00:00:00') + INTERVAL 1 SECOND"
	}
	return []chunkTable{
		{"claim_requirements", 30, c.Requirements, []string{
			"status = IF(status = 'PENDING', 'COMPLETE', 'PENDING'), " + bump("updated_at"),
			bump("updated_at"),
		}},
		{"claims", 25, c.Claims, []string{bump("client_last_updated_at")}},
		{"users", 20, c.Users, []string{bump("last_login")}},
		{"claim_vehicle_packages", 15, c.VehiclePackages, []string{bump("updated_at")}},
		{"user_addresses", 10, c.Addresses, []string{bump("updated_at")}},
	}
}

type chunkTable struct {
	table string
	share int
	rows  int
	sets  []string // alternated between chunks
}

const chunkRows = 500

// backlog writes about n row changes; it returns the row changes
// (affected rows) and transactions written.
func (b *bench) backlog(ctx context.Context, n int) (rows, txns int64, err error) {
	var nRows, nTxns atomic.Int64
	conn := func() (*client.Conn, error) {
		c, err := client.Connect(b.my.Addr(), "root", "", b.name)
		if err != nil {
			return nil, fmt.Errorf("backlog connect: %w", err)
		}
		return c, nil
	}
	exec := func(c *client.Conn, q string, args ...any) error {
		for attempt := 0; ; attempt++ {
			r, err := c.Execute(q, args...)
			if err != nil {
				// Concurrent writers on one table can deadlock or time out
				// on row locks: retry, as an application would.
				if attempt < 5 && (strings.Contains(err.Error(), "Deadlock") || strings.Contains(err.Error(), "Lock wait timeout")) {
					continue
				}
				return fmt.Errorf("backlog %s: %w", q[:min(len(q), 60)], err)
			}
			nRows.Add(int64(r.AffectedRows))
			nTxns.Add(1)
			r.Close()
			return nil
		}
	}

	counts := b.o.size.Counts()
	singles := n / 10
	large := min(n*3/10, counts.Requirements)
	chunked := n - singles - large

	// The large transaction first and alone: it locks a third of a table.
	c, err := conn()
	if err != nil {
		return 0, 0, err
	}
	err = exec(c, "UPDATE claim_requirements SET updated_at = COALESCE(updated_at, '2024-01-01 00:00:00') + INTERVAL 1 SECOND WHERE id BETWEEN 1 AND ?", large)
	c.Close()
	if err != nil {
		return 0, 0, err
	}

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	run := func(f func(c *client.Conn) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := conn()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := f(c); err != nil {
				errs <- err
			}
		}()
	}
	const singleWriters = 4
	for w := 0; w < singleWriters; w++ {
		run(func(c *client.Conn) error {
			users, err := c.Prepare(userUpdate)
			if err != nil {
				return err
			}
			defer users.Close()
			reqs, err := c.Prepare("UPDATE claim_requirements SET status = IF(status = 'PENDING', 'COMPLETE', 'PENDING'), updated_at = NOW() WHERE id = ?")
			if err != nil {
				return err
			}
			defer reqs.Close()
			for i := w; i < singles && ctx.Err() == nil; i += singleWriters {
				st, id := users, 1+(i/2)%counts.Users
				if i%2 == 1 {
					st, id = reqs, 1+(i/2)%counts.Requirements
				}
				r, err := st.Execute(id)
				if err != nil {
					return fmt.Errorf("backlog single-row update: %w", err)
				}
				nRows.Add(int64(r.AffectedRows))
				nTxns.Add(1)
				r.Close()
			}
			return ctx.Err()
		})
	}
	for _, t := range b.chunkTables() {
		quota := chunked * t.share / 100
		if t.rows == 0 || quota == 0 {
			continue
		}
		run(func(c *client.Conn) error {
			next := 1
			for k := 0; quota > 0 && ctx.Err() == nil; k++ {
				size := min(chunkRows, quota, t.rows-next+1)
				q := "UPDATE " + t.table + " SET " + t.sets[k%len(t.sets)] + " WHERE id BETWEEN ? AND ?"
				if err := exec(c, q, next, next+size-1); err != nil {
					return err
				}
				quota -= size
				if next += size; next > t.rows {
					next = 1
				}
			}
			return ctx.Err()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return 0, 0, err
	}
	return nRows.Load(), nTxns.Load(), nil
}

// noopRead streams from `from` until the head with a handler that only
// counts, and returns the row changes and transactions it saw.
func (b *bench) noopRead(ctx context.Context, from, head string) (rows, txns int, took time.Duration, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.serverID++
	cfg := canal.Config{
		Addr: b.my.Addr(), User: "root", Flavor: "mariadb", ServerID: b.serverID, Database: b.name,
		Tables: handlers.Specs(),
		Logger: slog.New(slog.NewTextHandler(logWriter{b.log, "no-op reader: "}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	reached := false
	t0 := time.Now()
	err = canal.Stream(ctx, cfg, change.Position{GTIDSet: from}, func(_ context.Context, t *change.Txn) error {
		rows += len(t.Changes)
		if !t.Partial {
			txns++
			if benchkit.GTIDCovers(t.End.GTIDSet, head) {
				reached = true
				cancel()
			}
		}
		return nil
	})
	took = time.Since(t0)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("no-op canal reader: %w", err)
	}
	if !reached {
		return 0, 0, 0, errors.New("no-op canal reader stopped before the head")
	}
	return rows, txns, took, nil
}

// logWriter sends an in-harness client's warnings to the harness log.
type logWriter struct {
	log    *slog.Logger
	prefix string
}

func (w logWriter) Write(b []byte) (int, error) {
	w.log.Warn(w.prefix + strings.TrimSpace(string(b)))
	return len(b), nil
}

// catchUpScenario runs o.runs backlogs. p is the running, caught-up main
// pipeline; the returned process is the one running at the end.
func (b *bench) catchUpScenario(ctx context.Context, p *dsProc, pc pipeCfg, cfgPath string) (*benchkit.CatchUpResult, *dsProc, error) {
	res := &benchkit.CatchUpResult{Mix: backlogMix}
	var drain, noop, sinkT, drate, nrate, ratio, srate, sratio []float64
	var rs []benchkit.Resources
	var work []int
	var stages []*benchkit.Stages
	for run := 1; run <= b.o.catchUpRuns; run++ {
		if err := b.waitCaughtUp(ctx, p, pc.schema, "", 5*time.Minute); err != nil {
			return nil, p, err
		}
		if err := p.stop(); err != nil {
			return nil, p, err
		}
		from, err := b.checkpoint(ctx, pc.schema)
		if err != nil {
			return nil, p, err
		}
		b.log.Info("catch-up: writing the backlog with dialsync stopped", "run", run, "rows", b.o.backlog)
		t0 := time.Now()
		wrows, wtxns, err := b.backlog(ctx, b.o.backlog)
		if err != nil {
			return nil, p, err
		}
		write := time.Since(t0)
		head, err := b.sourceHead(ctx)
		if err != nil {
			return nil, p, err
		}
		rows, txns, noopTook, err := b.noopRead(ctx, from, head)
		if err != nil {
			return nil, p, err
		}
		if int64(rows) != wrows {
			b.log.Warn("catch-up: the no-op reader saw a different number of row changes than written", "written", wrows, "read", rows, "written_txns", wtxns)
		}
		b.log.Info("catch-up: no-op reader done", "rows", rows, "txns", txns, "took", noopTook.Round(time.Millisecond))

		// dialsync is stopped: its notices for this backlog are the
		// stream's messages after this one (the sink reference's input).
		seq0, err := b.streamLastSeq(ctx, pc.stream)
		if err != nil {
			return nil, p, err
		}
		p, err = b.startDialsync(cfgPath, filepath.Join(b.dir, fmt.Sprintf("catchup-%d.log", run)))
		if err != nil {
			return nil, nil, err
		}
		s, err := benchkit.StartSampler(p.pid(), 100*time.Millisecond)
		if err != nil {
			return nil, p, err
		}
		wait := func() {}
		if run == 1 && b.o.profile != "" {
			// The HTTP server needs a moment after the process starts.
			time.Sleep(200 * time.Millisecond)
			wait = b.profileCPU(ctx, pc, "catchup", 15*time.Second)
		}
		err = b.waitCaughtUp(ctx, p, pc.schema, head, 30*time.Minute)
		drainTook := time.Since(p.started)
		r := benchkit.CatchUpRun{Resources: s.Stop()}
		wait()
		if err != nil {
			return nil, p, err
		}
		if m := b.scrape(ctx, pc); m != nil {
			r.Stages = benchkit.StagesBetween(nil, m, drainTook)
		}
		sink, err := b.sinkReference(ctx, pc, seq0)
		if err != nil {
			return nil, p, err
		}
		if r.Stages != nil && r.Stages.Notices != sink.notices {
			b.log.Warn("catch-up: dialsync's published-notices counter differs from the notices its stream received (repeats dropped by the duplicate window?)",
				"counted", r.Stages.Notices, "stored", sink.notices)
		}
		r.Rows, r.Txns = rows, txns
		r.WriteSec, r.DrainSec, r.NoopSec = write.Seconds(), drainTook.Seconds(), noopTook.Seconds()
		r.DialsyncRate = float64(rows) / drainTook.Seconds()
		r.NoopRate = float64(rows) / noopTook.Seconds()
		r.Ratio = r.DialsyncRate / r.NoopRate
		r.Notices, r.NoticeBytes, r.SinkSec = sink.notices, sink.bytes, sink.took.Seconds()
		r.SinkRate = float64(rows) / r.SinkSec
		r.SinkRatio = r.DialsyncRate / r.SinkRate
		b.log.Info("catch-up", "run", run, "rows", rows, "txns", txns, "notices", sink.notices, "written_in", write.Round(time.Millisecond),
			"dialsync_rows_per_s", int(r.DialsyncRate), "noop_rows_per_s", int(r.NoopRate), "sink_rows_per_s", int(r.SinkRate),
			"ratio_noop", benchkit.F(r.Ratio, 3), "ratio_sink", benchkit.F(r.SinkRatio, 3))
		res.Runs = append(res.Runs, r)
		res.Rows, res.Txns, res.Notices = rows, txns, sink.notices
		drain, noop, sinkT = append(drain, r.DrainSec), append(noop, r.NoopSec), append(sinkT, r.SinkSec)
		drate, nrate, ratio = append(drate, r.DialsyncRate), append(nrate, r.NoopRate), append(ratio, r.Ratio)
		srate, sratio = append(srate, r.SinkRate), append(sratio, r.SinkRatio)
		rs, work = append(rs, r.Resources), append(work, rows)
		stages = append(stages, r.Stages)
	}
	res.Stages = benchkit.CombineStages(stages)
	res.DrainSec, res.NoopSec = benchkit.SpreadOf(drain), benchkit.SpreadOf(noop)
	res.DialsyncRate, res.NoopRate, res.Ratio = benchkit.SpreadOf(drate), benchkit.SpreadOf(nrate), benchkit.SpreadOf(ratio)
	res.SinkSec, res.SinkRate, res.SinkRatio = benchkit.SpreadOf(sinkT), benchkit.SpreadOf(srate), benchkit.SpreadOf(sratio)
	res.Resources = benchkit.SpreadResources(rs, work, "row changes")
	return res, p, nil
}
