package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"dialsync/internal/config"
	"dialsync/internal/pipeline"
)

// runRun is `dialsync run`: the pipeline from Open to Close. Signals (see
// Main): the first SIGINT/SIGTERM cancels ctx, so the batch in hand is
// applied and its checkpoint stored, or abandoned when a server does not
// answer (replay makes that safe), before Run returns (exit 0; also during
// start-up); a second exits at once. SIGHUP has nothing to reload and is
// logged and ignored.
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
	defer ignoreHangups(log)()
	log.Info("starting", "version", buildVersion())
	for _, name := range config.UnknownEnv(os.Environ()) {
		log.Warn("environment variable matches no config key: check its spelling", "name", name)
	}

	p, err := pipeline.Open(ctx, cfg, log, pipeline.Options{Version: buildVersion()})
	if errors.Is(err, pipeline.ErrStopped) {
		return nil // a standby stopped while it waited for the lease
	}
	if err != nil && ctx.Err() != nil {
		// A signal during start-up (a connect, a handshake, a migration):
		// nothing was applied, so this is a clean stop (exit 0).
		log.Warn("stopped by a signal before start-up finished", "signal", context.Cause(ctx).Error(), "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	defer func() {
		if err := p.Close(); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}()
	return p.Run(ctx)
}

// ignoreHangups logs and ignores SIGHUP (its default action ends the
// process) until the returned function is called.
func ignoreHangups(log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: nothing to reload; ignoring")
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-stopped
	}
}
