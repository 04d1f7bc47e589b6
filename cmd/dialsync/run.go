package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"dialsync/internal/pipeline"
)

// runRun is `dialsync run`: the pipeline from Open to Close. Signals (see
// Main): the first SIGINT/SIGTERM cancels ctx, so the batch in hand is
// applied and its checkpoint stored, or abandoned when a server does not
// answer (replay makes that safe), before Run returns (exit 0; also during
// start-up); a second exits at once. SIGHUP has nothing to reload and is
// logged and ignored.
const runUsage = `usage: dialsync run [--config PATH]

Streams the source's binlog into the call queue (PostgreSQL), the cache
(Redis) and the notices (NATS JetStream), and stores the binlog checkpoint
after each applied batch. With no checkpoint it bootstraps first (records the
source head, reconciles the whole queue, then streams from that head). Only
the holder of the pipeline's lease streams: with ha.enabled (the default) an
instance that finds the lease held waits as a standby and takes over when
the leader's heartbeat stops. Logs go to stderr (JSON unless on a terminal).

Signals:
  INT, TERM          finish the batch in hand, store its checkpoint and exit 0
                     (a standby, or an instance still starting, just stops; a
                     batch whose servers do not answer within 5 s is abandoned
                     and replayed at the next start)
  a second INT/TERM  exit at once with 130; the next start replays from the
                     stored checkpoint, which is safe (notices are de-duplicated)
  HUP                logged and ignored: nothing is reloaded (restart to apply
                     a changed configuration)

Exit status: 0 stopped by a signal; 1 a runtime failure (a server, the
binlog, a lost lease, a fenced checkpoint: the last log line names it and the
fix); 2 bad command line or configuration; 130 a second signal.

flags:`

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlags("run", stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, runUsage); fs.PrintDefaults() }
	cfgPath := fs.String("config", "config.toml", "configuration file")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr, daemonLog)
	// The error that ends run is a log record too (a log store keeps
	// records, not the plain line main prints last).
	defer func() {
		if err != nil {
			log.Error("stopped on error", "err", oneLine(err.Error()))
		}
	}()
	defer ignoreHangups(log)()
	log.Info("starting", "version", buildVersion())
	warnHTTPListen(cfg, log)

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
