// Package pipeline is dialsync's running pipeline with a lifecycle: Open
// builds and checks every client, takes the lease and prepares the start;
// Run streams the binlog through the apply loop; Close stops and joins
// every goroutine the pipeline started, then releases the lease and closes
// the clients (docs/design.md, pipeline and HA fencing).
//
// The goroutines, each joined by Close before the lease is released:
//   - http: the metrics and readiness server (Open, if [http] listen is set);
//   - lease: cancels the pipeline when the lease is lost (Open);
//   - poll: the monitor's once-a-second gauges (Open);
//   - loop: the apply loop, which joins its own stages and checkpoint saver
//     before it returns (Run);
//   - stream: the binlog reader (Run);
//   - reconcile: the scheduled reconcile, and the one reconcile.on_start =
//     "always" starts (Run);
//   - housekeeping: pruning of checkpoint history and dead letters (Run).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"

	"dialsync/canal"
	"dialsync/checkpoint"
	"dialsync/internal/apply"
	"dialsync/internal/config"
	"dialsync/internal/httpserver"
	"dialsync/internal/metrics"
	"dialsync/internal/reconcile"
)

// ErrStopped is Open's error when its context ended while it waited for the
// lease (a standby stopped): nothing was started, nothing failed.
var ErrStopped = errors.New("pipeline: stopped while waiting for the lease")

// Options are what Open takes besides the configuration.
type Options struct {
	// Version is the build version reported by dialsync_build_info.
	Version string
	// PGTracer, when set, traces every statement on the PostgreSQL pool
	// (tests count them).
	PGTracer pgx.QueryTracer
}

// Pipeline is one running pipeline. Open it, Run it once, Close it.
type Pipeline struct {
	cfg *config.Config
	log *slog.Logger
	env *Env
	mon *Monitor
	srv *httpserver.Server

	// ctx ends at Close, or when the lease is lost (its cause says so);
	// every goroutine the pipeline starts runs under it and is counted in
	// wg, which Close waits for before it releases anything.
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	lease *checkpoint.Lease
	loop  *apply.Loop
	rec   *reconcile.Reconciler
	// cp is the stored checkpoint (found false: Run bootstraps).
	cp    checkpoint.Checkpoint
	found bool

	mu        sync.Mutex // guards ran and closed
	ran       bool
	closed    bool
	closeOnce sync.Once
	closeErr  error
}

// Open builds and checks every client, starts the http server if
// configured, takes the pipeline's lease (a standby waits here), connects
// the sinks, checks that the lookup server is the binlog server, loads the
// checkpoint (recovering from a purged binlog if recovery.on_purged says
// so) and seeds the apply loop's maps and queue mark. With no checkpoint
// the bootstrap happens at the start of Run. On error everything opened is
// closed again; if ctx ends while waiting for the lease the error is
// ErrStopped.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger, opt Options) (*Pipeline, error) {
	p := &Pipeline{cfg: cfg, log: log}
	p.ctx, p.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	if err := p.open(ctx, opt); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Pipeline) open(ctx context.Context, opt Options) error {
	cfg, log := p.cfg, p.log
	var err error
	if p.env, err = openEnv(ctx, cfg, log, opt.PGTracer); err != nil {
		return err
	}
	env := p.env
	p.mon = newMonitor(env, metrics.New(), opt.Version, log)
	if cfg.HTTP.Listen != "" {
		srv := httpserver.New(cfg.HTTP.Listen, p.mon.m, p.mon.ready, cfg.HTTP.Pprof)
		if err := srv.Start(); err != nil {
			return config.Usagef("http.listen: %v", err)
		}
		p.srv = srv
		log.Info("http listening", "addr", srv.Addr().String())
	}

	// Leadership: only the holder of the pipeline's lease streams. A standby
	// waits here until the leader dies. With ha.enabled = false the lease
	// is still taken (so recovery commands see this instance and refuse),
	// but a held lease is an error instead of a wait.
	holder := HolderName()
	if !cfg.HA.Enabled {
		other, epoch, held, err := env.Holder(ctx)
		if err != nil {
			return err
		}
		if held {
			return fmt.Errorf("instance %s holds the lease for pipeline %s (epoch %d) and ha.enabled = false: not waiting; stop it or set ha.enabled = true to run as its standby", other, cfg.Pipeline.Name, epoch)
		}
	}
	// With ha.enabled the lease says "standing by" itself, and only when
	// another instance holds it: a lone instance takes it at once.
	lease, err := checkpoint.AcquireLeaseWith(ctx, cfg.Postgres.DSN, cfg.Postgres.Schema, cfg.Pipeline.Name, holder,
		checkpoint.LeaseOptions{CheckInterval: cfg.HA.LeaseCheck.Duration(), TTL: cfg.HA.LeaseTTL.Duration()}, log)
	if err != nil {
		if ctx.Err() != nil {
			return ErrStopped
		}
		return fmt.Errorf("acquire lease: %w", err)
	}
	p.lease = lease
	env.Ckpt.SetEpoch(lease.Epoch())
	p.mon.setLeader(lease.Epoch()) // the lease logged "lease acquired" with the epoch

	// From here on a lost lease stops the opening too.
	ctx, stop := p.bind(ctx)
	defer stop(nil)

	env.reconnected = func(server string) { p.mon.m.Reconnects.WithLabelValues(server).Inc() }
	env.Canal.OnRestart = func(error) { env.reconnected("mysql") }
	if err := env.ConnectSinks(ctx); err != nil {
		return err
	}
	if err := p.checkSameServer(ctx); err != nil {
		return err
	}

	p.spawn(func() {
		select {
		case <-lease.Lost():
			p.cancel(fmt.Errorf("lost the pipeline lease (another instance may have taken over): stopping without writing: %w", lease.Err()))
		case <-p.ctx.Done():
		}
	})
	p.spawn(func() { p.mon.poll(p.ctx) })

	if p.cp, p.found, err = env.Ckpt.Load(ctx); err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}
	if p.found {
		// The checkpoint's age counts from its last write, not from this
		// start: a pipeline that cannot apply anything shows it growing.
		p.mon.lastSave.Store(p.cp.UpdatedAt.UnixNano())
		p.mon.mu.Lock()
		p.mon.pos = p.cp.Pos // bytes behind are measured from it until the first save
		p.mon.mu.Unlock()
	}
	if p.found {
		if err := p.checkCheckpoint(ctx); err != nil {
			return err
		}
	}
	p.loop = env.NewLoop(log, p.mon)
	p.mon.loop.Store(p.loop)
	if p.found {
		if err := p.seed(ctx); err != nil {
			return err
		}
	}
	p.rec = env.NewReconciler(p.loop, log)
	return nil
}

// bind returns a context that ends when ctx or the pipeline ends, with the
// cause of whichever ended first.
func (p *Pipeline) bind(ctx context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(p.ctx, func() { cancel(context.Cause(p.ctx)) })
	return ctx, func(err error) { stop(); cancel(err) }
}

// spawn runs fn on a goroutine Close waits for.
func (p *Pipeline) spawn(fn func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
}

// Run streams until ctx ends (nil: the batch in hand is applied and its
// checkpoint stored), or a fatal error, or the lease is lost, or Close is
// called. With no checkpoint it first bootstraps: stopped during the
// bootstrap it returns nil and the next run bootstraps again. Run may be
// called once, before Close; Close waits for it to return.
func (p *Pipeline) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.ran || p.closed {
		p.mu.Unlock()
		return errors.New("pipeline: Run called twice or after Close")
	}
	p.ran = true
	// Counted like the goroutines it starts, so that they are all added
	// while the count is above zero, even if Close is waiting already.
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	return p.run(ctx)
}

func (p *Pipeline) run(ctx context.Context) error {
	cfg, log, env := p.cfg, p.log, p.env
	ctx, cancel := p.bind(ctx)
	defer cancel(nil)

	loopErr := make(chan error, 1)
	p.spawn(func() { loopErr <- p.loop.Run(ctx) })

	from := p.cp.Pos
	if !p.found {
		var stopped bool
		var err error
		if from, stopped, err = p.bootstrap(ctx); stopped || err != nil {
			return err
		}
	} else if cfg.Reconcile.OnStart == "always" {
		p.spawn(func() { p.reconcile(ctx, metrics.TriggerSchedule) })
	}

	p.spawn(func() {
		scheduled(ctx, cfg.Reconcile.Interval.Duration(), func() { p.reconcile(ctx, metrics.TriggerSchedule) })
	})
	p.spawn(func() { scheduled(ctx, cfg.Housekeeping.Interval.Duration(), func() { p.housekeep(ctx) }) })

	streamErr := make(chan error, 1)
	p.spawn(func() {
		p.mon.streaming.Store(true)
		defer p.mon.streaming.Store(false)
		streamErr <- canal.Run(ctx, env.Canal, from, p.loop.Submit)
	})

	var runErr error
	select {
	case err := <-streamErr:
		if err != nil {
			runErr = p.explainStreamError(err)
		}
		cancel(runErr)
		if err := <-loopErr; err != nil && runErr == nil {
			runErr = err
		}
	case err := <-loopErr:
		runErr = err
		cancel(err)
		<-streamErr
	}
	// A lost lease cancels everything; the errors that follow (a retry
	// stopped, a closed stream) are its consequences: name the cause first.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(runErr, cause) {
		if runErr == nil {
			runErr = cause
		} else {
			runErr = fmt.Errorf("%w (then: %v)", cause, runErr)
		}
	}
	if runErr != nil {
		return runErr
	}
	log.Info("stopped cleanly")
	return nil
}

// Close stops the pipeline: it cancels Run and every goroutine the pipeline
// started and waits for all of them (a scheduled reconcile or housekeeping
// in progress included), then closes the http server, releases the lease
// and closes the clients, in that order, so nothing reaches a server once
// the lease is given up. Safe to call more than once.
func (p *Pipeline) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.cancel(nil)
		p.wg.Wait()
		var errs []error
		if p.srv != nil {
			errs = append(errs, p.srv.Close(context.Background()))
		}
		if p.lease != nil {
			errs = append(errs, p.lease.Release(context.Background()))
		}
		if p.env != nil {
			p.env.Close()
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
