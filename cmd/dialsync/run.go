package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"dialsync/canal"
	"dialsync/checkpoint"
	"dialsync/internal/apply"
	"dialsync/internal/reconcile"
)

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	cfgPath := fs.String("config", "config.toml", "configuration file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	log.Info("starting", "version", buildVersion())

	env, err := openEnv(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer env.Close()

	// Leadership: only the holder of the pipeline's lease streams. A standby
	// waits here until the leader dies.
	holder := leaseHolderName()
	var lease *checkpoint.Lease
	if cfg.HA.Enabled {
		log.Info("waiting for the pipeline lease", "holder", holder)
		lease, err = checkpoint.AcquireLease(ctx, env.pgDSN, cfg.Postgres.Schema, cfg.Pipeline.Name, holder, log)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("acquire lease: %w", err)
		}
		defer lease.Release(context.WithoutCancel(ctx))
		env.ckpt.SetEpoch(lease.Epoch())
		log.Info("leader", "epoch", lease.Epoch())
	}

	if err := env.connectSinks(ctx); err != nil {
		return err
	}

	cp, found, err := env.ckpt.Load(ctx)
	if err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if lease != nil {
		go func() {
			select {
			case <-lease.Lost():
				cancel(errors.New("lost the pipeline lease (another instance may have taken over): stopping without writing"))
			case <-ctx.Done():
			}
		}()
	}

	loop := env.newLoop(log)
	// The claim -> user map as of the checkpoint (see internal/apply). A
	// bootstrap, or a checkpoint an operator moved, starts from the lookup
	// server's current claims, stored with the next checkpoint.
	owners, err := env.ckpt.Owners(ctx)
	if err != nil {
		return err
	}
	if !found || len(owners) == 0 {
		if owners, err = env.lookup.AllClaimOwners(ctx); err != nil {
			return err
		}
		// A bootstrap stores the map with its start position below;
		// otherwise the next checkpoint stores it.
		loop.SetOwners(owners, found)
	} else {
		loop.SetOwners(owners, false)
	}
	loopErr := make(chan error, 1)
	go func() { loopErr <- loop.Run(ctx) }()

	from := cp.Pos
	if !found {
		// Bootstrap (BRIEF section 5): record the source position FIRST,
		// then reconcile the whole queue through the apply loop, then stream
		// from the recorded position. Everything that changes during the
		// reconcile is in the binlog after `from` and recomputed again.
		from, err = canal.Head(ctx, env.canalCfg)
		if err != nil {
			return fmt.Errorf("bootstrap: read source head: %w", err)
		}
		log.Info("no checkpoint: bootstrapping", "from", from.String())
		rec := env.newReconciler(loop, log)
		sum, err := rec.Run(ctx, reconcile.Options{Trigger: "bootstrap"})
		if err != nil {
			return fmt.Errorf("bootstrap reconcile: %w", err)
		}
		log.Info("bootstrap reconcile done", "users", sum.Users, "entered", sum.Entered, "left", sum.Left, "changed", sum.Changed, "took", sum.Took.Round(time.Millisecond))
		if err := loop.Do(ctx, func(ctx context.Context) error { return env.ckpt.Save(ctx, from, owners) }); err != nil {
			return fmt.Errorf("bootstrap: store start position: %w", err)
		}
	}

	streamErr := make(chan error, 1)
	go func() {
		streamErr <- canal.Run(ctx, env.canalCfg, from, loop.Submit)
	}()

	var runErr error
	select {
	case err := <-streamErr:
		if err != nil {
			runErr = fmt.Errorf("binlog: %w", err)
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
	if runErr == nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			runErr = cause
		}
	}
	if runErr != nil {
		return runErr
	}
	log.Info("stopped cleanly")
	return nil
}

func leaseHolderName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/pid-%d", h, os.Getpid())
}

var _ = slog.Default
var _ = apply.New
