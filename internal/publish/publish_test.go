package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/publish/natstest"
	"dialsync/notice"
)

// names derives a stream name and subject prefix from the test name.
func names(t testing.TB) (stream, prefix string) {
	n := strings.NewReplacer("/", "_", " ", "_", "=", "_", ".", "_").Replace(t.Name())
	return "S_" + n, "t_" + strings.ToLower(n)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tw{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tw struct{ t testing.TB }

func (w tw) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func open(t testing.TB, cfg Config) *Publisher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := Open(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// batch builds n user.changed notices from transaction txn.
func batch(prefix, txn string, n int) []notice.Message {
	msgs := make([]notice.Message, n)
	at := time.Now()
	for i := range msgs {
		msgs[i] = notice.NewUserChanged("dialsync/test", prefix, at, notice.UserChanged{
			UserID: uint64(i + 1), Tables: []string{"claims"}, Operations: []string{"update"}, Columns: []string{"status"},
			Source: notice.SourcePosition{Txn: txn}})
	}
	return msgs
}

func streamInfo(t testing.TB, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info %s: %v", name, err)
	}
	return info
}

// storedIDs reads every message of the stream and returns its Nats-Msg-Id
// values with their counts.
func storedIDs(t testing.TB, js jetstream.JetStream, stream string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	total := streamInfo(t, js, stream).State.Msgs
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for got := uint64(0); got < total; {
		b, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			ids[m.Headers().Get(jetstream.MsgIDHeader)]++
			got++
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			t.Fatal(err)
		}
	}
	return ids
}

func TestOpenCreatesAndUpdatesStream(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	stream, prefix := names(t)

	open(t, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true})
	cfg := streamInfo(t, js, stream).Config
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != prefix+".>" || cfg.Duplicates != 2*time.Minute ||
		cfg.MaxAge != 72*time.Hour || cfg.Storage != jetstream.FileStorage || cfg.Retention != jetstream.LimitsPolicy ||
		cfg.Replicas != 1 || cfg.MaxBytes != -1 {
		t.Fatalf("stream config %+v", cfg)
	}

	if !strings.HasPrefix(cfg.Description, ownerMark) {
		t.Fatalf("created stream not marked as dialsync's: description %q", cfg.Description)
	}

	// Opening again with wider settings widens the stream in place.
	open(t, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true,
		DuplicateWindow: 5 * time.Minute, MaxAge: 96 * time.Hour})
	cfg = streamInfo(t, js, stream).Config
	if cfg.Duplicates != 5*time.Minute || cfg.MaxAge != 96*time.Hour || cfg.MaxBytes != -1 {
		t.Fatalf("widened stream config %+v", cfg)
	}
	// Narrower settings are refused, naming each cut, unless allowed.
	_, err := Open(context.Background(), Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true,
		DuplicateWindow: 5 * time.Minute, MaxAge: time.Hour, MaxBytes: 1 << 30}, testLogger(t))
	wantErr(t, err, stream, "max_age 96h0m0s -> 1h0m0s", "max_bytes unlimited -> 1073741824", "nats.shrink_stream = true")
	if cfg = streamInfo(t, js, stream).Config; cfg.MaxAge != 96*time.Hour || cfg.MaxBytes != -1 {
		t.Fatalf("refused cut changed the stream: %+v", cfg)
	}
	open(t, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true, ShrinkStream: true,
		DuplicateWindow: 5 * time.Minute, MaxAge: time.Hour, MaxBytes: 1 << 30})
	cfg = streamInfo(t, js, stream).Config
	if cfg.Duplicates != 5*time.Minute || cfg.MaxAge != time.Hour || cfg.MaxBytes != 1<<30 {
		t.Fatalf("shrunk stream config %+v", cfg)
	}

	// Unmanaged Open accepts the stream it now finds.
	p := open(t, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, DuplicateWindow: 5 * time.Minute})
	if !p.Healthy() {
		t.Fatal("publisher not healthy after Open")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Healthy() {
		t.Fatal("publisher healthy after Close")
	}
	if err := p.Publish(context.Background(), batch(prefix, "tx", 1)); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
}

func TestPublish10kAllAckedAndDeduped(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	stream, prefix := names(t)
	p := open(t, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true})

	const n = 10000
	msgs := batch(prefix, "0-1-1", n)
	ctx := context.Background()
	start := time.Now()
	if err := p.Publish(ctx, msgs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	took := time.Since(start)
	t.Logf("published %d messages in %s: %.0f msgs/s (every one acked)", n, took.Round(time.Millisecond), n/took.Seconds())

	if got := streamInfo(t, js, stream).State.Msgs; got != n {
		t.Fatalf("stream holds %d messages, want %d", got, n)
	}
	// The same batch again (a replay after a crash) is dropped by the
	// stream's duplicate window: acks come back as duplicates, count unchanged.
	if err := p.Publish(ctx, msgs); err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if got := streamInfo(t, js, stream).State.Msgs; got != n {
		t.Fatalf("after replay the stream holds %d messages, want %d", got, n)
	}
	ids := storedIDs(t, js, stream)
	for _, m := range msgs {
		if ids[m.ID] != 1 {
			t.Fatalf("id %s stored %d times", m.ID, ids[m.ID])
		}
	}
	if err := p.Publish(ctx, nil); err != nil {
		t.Fatalf("empty Publish: %v", err)
	}
}

// NATS is killed in the middle of a Publish: Publish must not report success
// unless every message was acked, and a retry after the restart completes
// with every notice stored exactly once.
func TestRestartMidPublish(t *testing.T) {
	srv := natstest.Start(t)
	stream, prefix := names(t)
	p := open(t, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true, AckTimeout: 2 * time.Second})

	const n = 60000
	msgs := batch(prefix, "mysql-bin.000001:4", n)
	done := make(chan error, 1)
	_, js := srv.Connect(t)
	go func() { done <- p.Publish(context.Background(), msgs) }()
	// Kill once part of the batch is stored, so the retry overlaps it.
	for streamInfo(t, js, stream).State.Msgs < n/6 {
		time.Sleep(5 * time.Millisecond)
	}
	srv.Kill()

	firstErr := <-done
	t.Logf("Publish during the kill returned: %v", firstErr)
	srv.Restart()
	t.Logf("after the restart the stream holds %d of %d", streamInfo(t, js, stream).State.Msgs, n)
	if firstErr == nil {
		// Only allowed if every message had been acked before the kill.
		if got := streamInfo(t, js, stream).State.Msgs; got != n {
			t.Fatalf("Publish reported success but the stream holds %d of %d", got, n)
		}
	}

	// The apply loop's behaviour: retry the whole batch until it succeeds.
	deadline := time.Now().Add(30 * time.Second)
	attempts := 0
	for {
		attempts++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.Publish(ctx, msgs)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry still failing after %d attempts: %v", attempts, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("retry succeeded after %d attempt(s)", attempts)
	if !p.Healthy() {
		t.Fatal("publisher not healthy after reconnect")
	}
	if got := streamInfo(t, js, stream).State.Msgs; got != n {
		t.Fatalf("stream holds %d messages, want exactly %d", got, n)
	}
	ids := storedIDs(t, js, stream)
	if len(ids) != n {
		t.Fatalf("%d distinct ids stored, want %d", len(ids), n)
	}
	for id, c := range ids {
		if c != 1 {
			t.Fatalf("id %s stored %d times", id, c)
		}
	}
}

func TestConflictingStreams(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	stream, prefix := names(t)
	ctx := context.Background()

	// Another stream already captures the subjects: a managed stream of ours
	// would overlap it.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{prefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true}, testLogger(t))
	wantErr(t, err, stream, "overlap")

	// Unmanaged: the stream exists but its duplicate window is too short.
	_, err = Open(ctx, Config{URL: srv.URL, Stream: "OTHER", SubjectPrefix: prefix, DuplicateWindow: time.Hour}, testLogger(t))
	wantErr(t, err, "OTHER", "duplicate window")

	// Unmanaged: the stream does not capture our subjects.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NARROW", Subjects: []string{prefix + "x.user.*"}}); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Config{URL: srv.URL, Stream: "NARROW", SubjectPrefix: prefix + "x"}, testLogger(t))
	wantErr(t, err, "NARROW", "do not cover")

	// Unmanaged: the stream is missing.
	_, err = Open(ctx, Config{URL: srv.URL, Stream: "MISSING", SubjectPrefix: "nothing"}, testLogger(t))
	wantErr(t, err, "MISSING", "does not exist")

	// Managed: a change the server refuses (storage type) names the stream.
	if _, err := Open(ctx, Config{URL: srv.URL, Stream: "MEM", SubjectPrefix: prefix + "m", ManageStream: true, Storage: "memory"}, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Config{URL: srv.URL, Stream: "MEM", SubjectPrefix: prefix + "m", ManageStream: true, Storage: "file"}, testLogger(t))
	wantErr(t, err, "MEM", "storage")
}

// A stream dialsync did not create is never changed: used as it is when it
// can hold the notices, refused with the differences and the fix when not.
func TestForeignStreamIsNeverChanged(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	stream, prefix := names(t)
	ctx := context.Background()
	foreign := jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>", "app.events"},
		Duplicates: 10 * time.Second, Description: "the billing team's stream"}
	if _, err := js.CreateStream(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	before := streamInfo(t, js, stream).Config

	_, err := Open(ctx, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true}, testLogger(t))
	wantErr(t, err, stream, "duplicate window 10s is shorter than the required 2m0s", "nats stream edit "+stream+" --dupe-window 2m0s", ownerMark)
	if after := streamInfo(t, js, stream).Config; len(Differences(before, after)) > 0 {
		t.Fatalf("a foreign stream was changed: %v", Differences(before, after))
	}

	// Fit for the notices: used unchanged (retention, subjects, description kept).
	before.Duplicates = 5 * time.Minute
	if _, err := js.UpdateStream(ctx, before); err != nil {
		t.Fatal(err)
	}
	before = streamInfo(t, js, stream).Config
	p := open(t, Config{URL: srv.URL, Stream: stream, SubjectPrefix: prefix, ManageStream: true, MaxAge: time.Hour})
	if err := p.Publish(ctx, batch(prefix, "tx", 3)); err != nil {
		t.Fatal(err)
	}
	if after := streamInfo(t, js, stream).Config; len(Differences(before, after)) > 0 {
		t.Fatalf("a foreign stream was changed: %v", Differences(before, after))
	}

	// A stream the previous dialsync created (exactly its config, no mark)
	// is adopted: marked, nothing else changed.
	legacy := wantConfig(Config{Stream: stream + "_OLD", SubjectPrefix: prefix + "old", MaxAge: 72 * time.Hour, DuplicateWindow: 2 * time.Minute, Replicas: 1})
	legacy.Description = ""
	if _, err := js.CreateStream(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	open(t, Config{URL: srv.URL, Stream: legacy.Name, SubjectPrefix: prefix + "old", ManageStream: true})
	got := streamInfo(t, js, legacy.Name).Config
	if !ownedBy(got) || got.MaxAge != 72*time.Hour || got.Duplicates != 2*time.Minute {
		t.Fatalf("legacy stream not adopted as it was: %+v", got)
	}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
	t.Logf("got expected error: %v", err)
}

func TestUnreachableURL(t *testing.T) {
	srv := natstest.Start(t) // for a port that is surely free once stopped
	port := srv.Port
	srv.Stop()
	url := fmt.Sprintf("nats://dialsync:s3cret@127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, Config{URL: url, Password: "other-secret"}, testLogger(t))
	wantErr(t, err, fmt.Sprintf("127.0.0.1:%d", port))
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "other-secret") {
		t.Fatalf("error leaks a password: %v", err)
	}
}

func TestCovers(t *testing.T) {
	cases := []struct {
		filter, sub string
		want        bool
	}{
		{"dialsync.>", "dialsync.>", true},
		{">", "dialsync.>", true},
		{"*.>", "dialsync.>", true},
		{"dialsync.*", "dialsync.>", false},
		{"dialsync.user.>", "dialsync.>", false},
		{"other.>", "dialsync.>", false},
		{"dialsync", "dialsync.>", false},
		{"a.*.c", "a.b.c", true},
		{"a.b.c", "a.b.c", true},
		{"a.b", "a.b.c", false},
	}
	for _, c := range cases {
		if got := covers(c.filter, c.sub); got != c.want {
			t.Errorf("covers(%q, %q) = %v, want %v", c.filter, c.sub, got, c.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	got := redactURL("nats://u:pw@a:4222, tls://tok@b:4222,nats://c:4222")
	if strings.Contains(got, "pw") || strings.Contains(got, "tok") || !strings.Contains(got, "a:4222") || !strings.Contains(got, "nats://c:4222") {
		t.Fatalf("redactURL = %q", got)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{URL: ""},
		{URL: "nats://x", SubjectPrefix: "a.*"},
		{URL: "nats://x", SubjectPrefix: "a..b"},
		{URL: "nats://x", Storage: "disk"},
		{URL: "nats://x", MaxAge: time.Minute, DuplicateWindow: time.Hour},
	} {
		if _, err := Open(context.Background(), c, nil); err == nil {
			t.Errorf("Open(%+v) accepted a bad config", c)
		}
	}
}
