package apply

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// A failure of any server pauses and retries that stage; nothing is
// skipped and the checkpoint moves only after all effects.
func TestRetriesEveryStage(t *testing.T) {
	for _, op := range []string{"barrier", "rule", "postgres", "redis", "nats", "clear", "checkpoint", "claims"} {
		t.Run(op, func(t *testing.T) {
			f := newFakes()
			f.queued[7] = queue.Row{UserID: 7, OpenClaims: 1}
			f.owners[70] = 7
			f.failNext[op] = 3
			applied := make(chan BatchStats, 10)
			l := newTestLoop(t, f, applied)
			runLoop(t, l)
			req := change.Change{Table: "claim_requirements", Op: change.Insert, After: change.Row{int64(1), int64(70)}}
			if err := l.Submit(context.Background(), txn("0-1-9", 900, req)); err != nil {
				t.Fatal(err)
			}
			<-applied
			<-f.savedCh
			if f.failNext[op] != 0 {
				t.Fatalf("%s: injected failures not consumed", op)
			}
			if len(f.saved) != 1 || f.saved[0].Pos != 900 {
				t.Fatalf("saved = %v", f.saved)
			}
			if len(f.pubs) != 2 {
				t.Fatalf("published %d", len(f.pubs))
			}
			// The checkpoint is the last call: nothing after it.
			if f.calls[len(f.calls)-1] != "checkpoint" {
				t.Fatalf("calls = %v", f.calls)
			}
		})
	}
}

// failingDL fails its first fail calls.
type failingDL struct {
	fakeDL
	fail int
}

func (f *failingDL) AddDeadLetter(ctx context.Context, d DeadLetter) error {
	if f.fail > 0 {
		f.fail--
		return errors.New("dead letter: injected failure")
	}
	return f.fakeDL.AddDeadLetter(ctx, d)
}

// Every retried operation is reported with its typed stage: the stage of
// the server the operation talks to.
func TestRetryStages(t *testing.T) {
	type report struct {
		stage Stage
		op    string
	}
	var mu sync.Mutex
	var got []report
	onRetry := func(s Stage, op string, err error) {
		if err == nil {
			t.Errorf("%s: retry reported without an error", op)
		}
		mu.Lock()
		got = append(got, report{s, op})
		mu.Unlock()
	}
	keys, err := handlers.NewKeys("t:", handlers.DefaultUserKeyTemplates, handlers.DefaultQueueKeys)
	if err != nil {
		t.Fatal(err)
	}
	run := func(f *fakes, dl DeadLetters, txns ...*change.Txn) {
		applied := make(chan BatchStats, 10)
		l := New(Config{Pipeline: "p", Keys: keys, RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond,
			OnApplied: func(s BatchStats) { applied <- s }, OnRetry: onRetry,
			DeadLetter: func(table string) bool { return table == "users" }},
			Deps{Lookup: f, Queue: f, Cache: f, Publisher: f, Checkpoint: f, DeadLetters: dl},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		for _, tx := range txns {
			if err := l.Submit(ctx, tx); err != nil {
				t.Fatal(err)
			}
		}
		for n := 0; n < len(txns); {
			n += (<-applied).Txns
		}
		<-f.savedCh
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	// At the start: the outbox a previous run left.
	f := newFakes()
	f.outbox = []notice.Message{notice.NewQueueChanged("dialsync/p", "dialsync", "left", time.Now(),
		notice.QueueChanged{UserID: 4, Source: notice.SourcePosition{Txn: "0-1-1#x"}})}
	for _, op := range []string{"outbox", "nats", "clear"} {
		f.failNext[op] = 1
	}
	run(f, &fakeDL{}, txn("0-1-2", 200))

	// A batch through every stage: a claim and an address only the lookup
	// server knows, a dead letter, a queue change.
	f = newFakes()
	f.owners[70] = 7
	f.addrs[80] = []uint64{8}
	f.queued[7] = queue.Row{UserID: 7, OpenClaims: 1}
	for _, op := range []string{"barrier", "claims", "addresses", "rule", "postgres", "redis", "nats", "clear", "checkpoint"} {
		f.failNext[op] = 1
	}
	req := change.Change{Table: "claim_requirements", Op: change.Insert, After: change.Row{int64(1), int64(70)}}
	addr := change.Change{Table: "user_addresses", Op: change.Update, Before: change.Row{int64(80), int64(8)},
		After: change.Row{int64(80), int64(8)}, Changed: []string{"post_code"}}
	bad := change.Change{Table: "users", Op: change.Insert, After: change.Row{"not-an-id"}}
	run(f, &failingDL{fail: 1}, txn("0-1-3", 300, req, addr, bad))

	want := map[string]Stage{
		"read outbox": StagePostgres, "publish outbox": StageNATS, "clear outbox": StagePostgres,
		"lookup: commit barrier": StageLookup, "lookup claims": StageLookup, "lookup addresses": StageLookup,
		"evaluate queue rule": StageLookup, "record dead letter": StagePostgres, "write queue": StagePostgres,
		"delete cache keys": StageRedis, "publish notices": StageNATS, "save checkpoint": StageCheckpoint,
	}
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.op] = true
		if s, ok := want[r.op]; !ok || s != r.stage {
			t.Errorf("%s: stage %v, want %v", r.op, r.stage, s)
		}
	}
	for op := range want {
		if !seen[op] {
			t.Errorf("no retry reported for %s (reports: %v)", op, got)
		}
	}
}

type fatalErr struct{}

func (fatalErr) Error() string { return "fenced" }
func (fatalErr) Fatal() bool   { return true }

// fatalSave is a checkpoint store whose every write fails with err.
type fatalSave struct {
	*fakes
	err   error
	calls int
}

func (f *fatalSave) Save(context.Context, change.Position, map[uint64]uint64, map[uint64]uint64) error {
	f.calls++
	return f.err
}

// An error implementing Fatal, or one Config.Fatal names, stops the loop at
// the first attempt: no retry, and Run returns it.
func TestFatalErrorsStopTheLoop(t *testing.T) {
	wiring := errors.New("another instance leads")
	for _, c := range []struct {
		name  string
		err   error
		fatal func(error) bool
	}{
		{"Fatal interface", fatalErr{}, nil},
		{"Config.Fatal", wiring, func(err error) bool { return errors.Is(err, wiring) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakes()
			ckpt := &fatalSave{fakes: f, err: c.err}
			keys, _ := handlers.NewKeys("", handlers.DefaultUserKeyTemplates, handlers.DefaultQueueKeys)
			retries := 0
			l := New(Config{Pipeline: "p", Keys: keys, RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond,
				Fatal: c.fatal, OnRetry: func(Stage, string, error) { retries++ }},
				Deps{Lookup: f, Queue: f, Cache: f, Publisher: f, Checkpoint: ckpt},
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			done := make(chan error, 1)
			go func() { done <- l.Run(context.Background()) }()
			if err := l.Submit(context.Background(), txn("0-1-5", 500, userUpdate(7, "status"))); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, c.err) || !strings.Contains(err.Error(), "save checkpoint") {
					t.Fatalf("Run = %v, want the save error", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not stop at a fatal error")
			}
			if ckpt.calls != 1 || retries != 0 {
				t.Fatalf("save called %d times, %d retries reported; want one attempt, no retry", ckpt.calls, retries)
			}
		})
	}
}
