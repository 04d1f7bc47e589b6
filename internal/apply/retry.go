package apply

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// The retry policy: every server call of the loop is retried until it
// succeeds, the process stops, or the error is fatal.

// Fatal marks errors retrying cannot fix (fencing, for one).
type Fatal interface{ Fatal() bool }

// fatal says whether err must not be retried: it implements Fatal, or
// Config.Fatal says so.
func (l *Loop) fatal(err error) bool {
	var f Fatal
	if errors.As(err, &f) && f.Fatal() {
		return true
	}
	return l.cfg.Fatal != nil && l.cfg.Fatal(err)
}

// Retry is retry for jobs run through Do (reconcile chunks).
func (l *Loop) Retry(ctx context.Context, stage Stage, op string, fn func() error) error {
	return l.retry(ctx, stage, op, fn)
}

// retry runs fn until it succeeds, backing off with full jitter between
// RetryInitial and RetryMax. It gives up only when stop is cancelled or the
// error is fatal. op names the operation in logs and errors; stage goes to
// Config.OnRetry.
func (l *Loop) retry(stop context.Context, stage Stage, op string, fn func() error) error {
	delay := l.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				l.log.Info("recovered", "op", op, "attempts", attempt)
			}
			return nil
		}
		if l.fatal(err) {
			return fmt.Errorf("%s: %w", op, err)
		}
		l.log.Warn("retrying", "op", op, "attempt", attempt, "err", err)
		if l.cfg.OnRetry != nil {
			l.cfg.OnRetry(stage, op, err)
		}
		sleep := delay/2 + rand.N(delay/2+1)
		select {
		case <-time.After(sleep):
		case <-stop.Done():
			return fmt.Errorf("%s: stopped while retrying: %w", op, err)
		}
		delay = min(2*delay, l.cfg.RetryMax)
	}
}
