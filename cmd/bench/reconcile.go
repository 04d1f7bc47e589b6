package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"dialsync/internal/dev/benchkit"
)

// reconcileScenario times full reconciles of the seeded data: each run
// bootstraps the real binary into a fresh PostgreSQL schema (no checkpoint,
// empty queue) with its own stream, and reads the binary's own
// "bootstrap reconcile done" line. The wall figure adds the process start,
// the migrations and the claim -> user map load before the reconcile.
func (b *bench) reconcileScenario(ctx context.Context) (*benchkit.ReconcileResult, error) {
	res := &benchkit.ReconcileResult{}
	var rs []benchkit.Resources
	var took, wall []float64
	var users []int
	for i := 1; i <= b.o.reconcileRuns; i++ {
		p := pipeCfg{
			schema:   fmt.Sprintf("bench_reconcile_%d", i),
			stream:   fmt.Sprintf("%s_R%d", strings.ToUpper(b.name), i),
			subjects: fmt.Sprintf("%s_r%d", b.name, i),
		}
		if i == 1 && b.o.profile != "" {
			// The first run serves pprof, for a heap profile at the end.
			mp, err := b.mainPipe()
			if err != nil {
				return nil, err
			}
			p.listen = mp.listen
		}
		run, err := b.reconcileOnce(ctx, p, i)
		if err != nil {
			return nil, fmt.Errorf("reconcile run %d: %w", i, err)
		}
		b.log.Info("reconcile", "run", i, "took", time.Duration(run.TookSec*float64(time.Second)).Round(time.Millisecond),
			"wall", time.Duration(run.WallSec*float64(time.Second)).Round(time.Millisecond), "users", run.Users, "entered", run.Entered)
		res.Runs = append(res.Runs, run)
		took, wall = append(took, run.TookSec), append(wall, run.WallSec)
		rs = append(rs, run.Resources)
		users = append(users, run.Users)
		res.Users, res.Entered = run.Users, run.Entered
	}
	res.Took, res.Wall = benchkit.SpreadOf(took), benchkit.SpreadOf(wall)
	res.Resources = benchkit.SpreadResources(rs, users, "users")
	return res, nil
}

func (b *bench) reconcileOnce(ctx context.Context, p pipeCfg, i int) (run benchkit.ReconcileRun, err error) {
	cfg, err := b.writeConfig(p)
	if err != nil {
		return run, err
	}
	defer func() {
		// The schema and stream are this run's alone: drop them so runs
		// and the other scenarios do not share state.
		_, _ = b.pg.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{p.schema}.Sanitize()+" CASCADE")
		_ = b.js.DeleteStream(context.Background(), p.stream)
	}()
	dp, err := b.startDialsync(cfg, filepath.Join(b.dir, fmt.Sprintf("reconcile-%d.log", i)))
	if err != nil {
		return run, err
	}
	defer dp.stop()
	s, err := benchkit.StartSampler(dp.pid(), 50*time.Millisecond)
	if err != nil {
		return run, err
	}
	line, err := dp.waitFor(ctx, "bootstrap reconcile done", 5*time.Minute)
	run.Resources = s.Stop()
	if err != nil {
		return run, err
	}
	d, ok := durationField(line.fields["took"])
	if !ok {
		return run, fmt.Errorf("bootstrap log line has no readable took: %v", line.fields["took"])
	}
	// Heap (in use at the end and allocated since the start, by site).
	b.fetchProfile(ctx, p, "reconcile-heap", "heap")()
	run.TookSec = d.Seconds()
	run.WallSec = line.at.Sub(dp.started).Seconds()
	run.Users = intField(line.fields["users"])
	run.Entered = intField(line.fields["entered"])
	// Let the bootstrap finish (it stores its start position next) so the
	// process stops cleanly rather than mid-bootstrap.
	if err := b.waitCaughtUp(ctx, dp, p.schema, "", time.Minute); err != nil {
		return run, err
	}
	return run, dp.stop()
}
