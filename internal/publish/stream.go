package publish

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The stream.
//
// With nats.manage_stream = true dialsync creates the stream, and marks it
// as its own in the stream's description (Description exists on every
// JetStream server; stream metadata needs 2.10). A stream it did not create
// is never changed: if it can hold the notices as it is (it captures the
// subjects, its duplicate window is long enough, limits retention) it is
// used unchanged, otherwise Open refuses, naming every difference and the
// `nats stream edit` command that would fix it. A stream of its own is only
// widened (more subjects, longer retention, larger limits, longer duplicate
// window): cutting retention or subjects needs nats.shrink_stream = true,
// because it deletes notices subscribers may still need.

// ownerMark starts the description of a stream dialsync created.
const ownerMark = "managed by dialsync"

func ownedBy(c jetstream.StreamConfig) bool { return strings.HasPrefix(c.Description, ownerMark) }

// wantConfig is the stream dialsync creates for cfg.
func wantConfig(cfg Config) jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: ownerMark + " (notices on " + cfg.SubjectPrefix + ".>); edit through dialsync's [nats] config",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Duplicates:  cfg.DuplicateWindow,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	}
	if cfg.MaxBytes > 0 {
		sc.MaxBytes = cfg.MaxBytes
	}
	if cfg.Storage == "memory" {
		sc.Storage = jetstream.MemoryStorage
	}
	return sc
}

// ensureStream creates, widens or checks the stream (see above).
func (p *Publisher) ensureStream(ctx context.Context, cfg Config) error {
	want := wantConfig(cfg)
	s, err := p.js.Stream(ctx, cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound) && cfg.ManageStream:
		if _, err := p.js.CreateStream(ctx, want); err != nil {
			return streamError("create", cfg, err)
		}
		p.log.Info("created the stream", "subjects", want.Subjects, "duplicate_window", want.Duplicates.String(), "max_age", want.MaxAge.String())
		return nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("publish: stream %q does not exist (create it from deploy/ or set manage_stream = true)", cfg.Stream)
	case err != nil:
		return fmt.Errorf("publish: look up stream %q: %w", cfg.Stream, err)
	}
	cur := s.CachedInfo().Config
	next, note, err := PlanStream(cur, cfg)
	if err != nil {
		return err
	}
	if note != "" {
		p.log.Warn(note)
	}
	if next != nil {
		if _, err := p.js.UpdateStream(ctx, *next); err != nil {
			return streamError("update", cfg, err)
		}
		p.log.Info("updated the stream", "changes", strings.Join(Differences(cur, *next), "; "))
	}
	return nil
}

// PlanStream says what Open does with the existing stream cur: the config
// to update it to (nil: leave it), a warning to log, or why it refuses.
// `dialsync check` calls it too, so that check and run agree.
func PlanStream(cur jetstream.StreamConfig, cfg Config) (next *jetstream.StreamConfig, note string, err error) {
	cfg.defaults()
	want := wantConfig(cfg)
	if !cfg.ManageStream || !ownedBy(cur) {
		if cfg.ManageStream && sameLimits(cur, want) {
			// Created by a dialsync that did not mark its streams yet: the
			// config is exactly ours, so marking it changes nothing else.
			cur.Description = want.Description
			return &cur, "", nil
		}
		if problems := unfit(cur, cfg); len(problems) > 0 {
			return nil, "", fmt.Errorf("publish: stream %q cannot hold the notices: %s; dialsync changes only streams it created (this one's description does not say %q), so fix it yourself: %s",
				cfg.Stream, strings.Join(problems, "; "), ownerMark, editCommand(cur, cfg))
		}
		if cfg.ManageStream {
			return nil, fmt.Sprintf("stream %s exists and was not created by dialsync: using it unchanged (differences from dialsync's own: %s)",
				cfg.Stream, strings.Join(Differences(cur, want), "; ")), nil
		}
		return nil, "", nil
	}
	upd, cuts := widen(cur, want)
	if len(cuts) > 0 {
		if !cfg.ShrinkStream {
			return nil, "", fmt.Errorf("publish: the config would cut stream %q: %s, which deletes stored notices; set nats.shrink_stream = true to allow it, or set the [nats] keys back to the stream's values",
				cfg.Stream, strings.Join(cuts, "; "))
		}
		upd = want
	}
	if len(Differences(cur, upd)) == 0 {
		return nil, "", nil
	}
	return &upd, "", nil
}

func streamError(what string, cfg Config, err error) error {
	// The server's reason names the setting (e.g. "subjects overlap with an
	// existing stream", "can not change storage type").
	fix := ""
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == errCodeSubjectOverlap {
		fix = ": another stream already captures these subjects; pick another nats.subject_prefix, or set nats.stream to that stream's name and nats.manage_stream = false"
	}
	return fmt.Errorf("publish: %s stream %q (subjects %q, duplicate window %s, storage %s): %w%s",
		what, cfg.Stream, cfg.SubjectPrefix+".>", cfg.DuplicateWindow, cfg.Storage, err, fix)
}

// unfit lists why stream c cannot hold the notices of cfg.
func unfit(c jetstream.StreamConfig, cfg Config) []string {
	var out []string
	if want := cfg.SubjectPrefix + ".>"; !anyCovers(c.Subjects, want) {
		out = append(out, fmt.Sprintf("subjects %q do not cover %q", c.Subjects, want))
	}
	if c.Duplicates < cfg.DuplicateWindow {
		out = append(out, fmt.Sprintf("duplicate window %s is shorter than the required %s (retried notices could be stored twice)", c.Duplicates, cfg.DuplicateWindow))
	}
	if c.Retention == jetstream.WorkQueuePolicy {
		out = append(out, "it has work-queue retention (notices fan out to every subscriber: use limits retention)")
	}
	return out
}

// editCommand is the NATS CLI command that makes stream c fit cfg.
func editCommand(c jetstream.StreamConfig, cfg Config) string {
	if c.Retention == jetstream.WorkQueuePolicy {
		return "a stream's retention cannot be changed: point nats.stream at another stream (dialsync creates it)"
	}
	cmd := "nats stream edit " + c.Name
	if want := cfg.SubjectPrefix + ".>"; !anyCovers(c.Subjects, want) {
		cmd += fmt.Sprintf(" --subjects %q", strings.Join(append(slices.Clone(c.Subjects), want), ","))
	}
	if c.Duplicates < cfg.DuplicateWindow {
		cmd += " --dupe-window " + cfg.DuplicateWindow.String()
	}
	return "`" + cmd + "`"
}

// widen is cur with every limit of want that is wider, and the limits of
// want that would cut cur.
func widen(cur, want jetstream.StreamConfig) (next jetstream.StreamConfig, cuts []string) {
	next = cur
	for _, s := range want.Subjects {
		if !anyCovers(next.Subjects, s) {
			next.Subjects = append(slices.Clone(next.Subjects), s)
		}
	}
	for _, s := range cur.Subjects {
		if !anyCovers(want.Subjects, s) {
			cuts = append(cuts, fmt.Sprintf("subject %q would no longer be captured", s))
		}
	}
	wider := func(name string, c, w int64, unlimited func(int64) bool, show func(int64) string) int64 {
		switch {
		case c == w || unlimited(c) && unlimited(w):
			return c
		case unlimited(w) || !unlimited(c) && w > c:
			return w
		}
		cuts = append(cuts, fmt.Sprintf("%s %s -> %s", name, show(c), show(w)))
		return c
	}
	dur := func(v int64) string {
		if v <= 0 {
			return "unlimited"
		}
		return time.Duration(v).String()
	}
	num := func(v int64) string {
		if v <= 0 {
			return "unlimited"
		}
		return fmt.Sprint(v)
	}
	le0 := func(v int64) bool { return v <= 0 }
	never := func(int64) bool { return false }
	next.MaxAge = time.Duration(wider("max_age", int64(cur.MaxAge), int64(want.MaxAge), le0, dur))
	next.MaxBytes = wider("max_bytes", cur.MaxBytes, want.MaxBytes, le0, num)
	next.Duplicates = time.Duration(wider("duplicate_window", int64(cur.Duplicates), int64(want.Duplicates), never, dur))
	// Neither wider nor narrower: follow the config (the server refuses
	// what it cannot change, such as the storage type).
	next.Replicas, next.Storage, next.Description = want.Replicas, want.Storage, want.Description
	return next, cuts
}

// sameLimits reports whether a and b agree on everything dialsync sets but
// the description.
func sameLimits(a, b jetstream.StreamConfig) bool {
	a.Description, b.Description = "", ""
	return len(Differences(a, b)) == 0
}

// Differences lists the settings dialsync cares about where a and b differ.
func Differences(a, b jetstream.StreamConfig) []string {
	var out []string
	add := func(name string, x, y any) {
		if fmt.Sprint(x) != fmt.Sprint(y) {
			out = append(out, fmt.Sprintf("%s %v -> %v", name, x, y))
		}
	}
	add("subjects", a.Subjects, b.Subjects)
	add("retention", a.Retention, b.Retention)
	add("discard", a.Discard, b.Discard)
	add("max_age", a.MaxAge, b.MaxAge)
	add("max_bytes", a.MaxBytes, b.MaxBytes)
	add("max_msgs", a.MaxMsgs, b.MaxMsgs)
	add("duplicate_window", a.Duplicates, b.Duplicates)
	add("replicas", max(a.Replicas, 1), max(b.Replicas, 1))
	add("storage", a.Storage, b.Storage)
	add("description", a.Description, b.Description)
	return out
}
