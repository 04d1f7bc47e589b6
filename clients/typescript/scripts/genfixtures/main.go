// Command genfixtures prints, one JSON object per line, notices of every type
// encoded by dialsync's own encoder (package notice), for the TypeScript
// client's tests. Each line is {"subject", "id", "data"} where data is the
// exact published payload as a string, so the tests publish byte-for-byte what
// dialsync publishes.
//
// From the repository root:
//
//	go run ./clients/typescript/scripts/genfixtures > clients/typescript/testdata/notices.jsonl
//
// The output is deterministic (fixed times and positions); the TypeScript
// test "fixtures are current" re-runs it and compares when Go is installed.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"dialsync/notice"
)

type fixture struct {
	Subject string `json:"subject"`
	ID      string `json:"id"`
	Data    string `json:"data"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "genfixtures:", err)
		os.Exit(1)
	}
}

func run() error {
	const src, prefix = "dialsync/main", "dialsync"
	commit := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	oldest := time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC)
	gtidPos := notice.SourcePosition{File: "mysql-bin.000042", Pos: 123456, GTID: "0-1-4711", Txn: "0-1-4711"}
	filePos := notice.SourcePosition{File: "mysql-bin.000042", Pos: 999, Txn: "mysql-bin.000042:999"}

	msgs := []notice.Message{
		notice.NewUserChanged(src, prefix, commit, notice.UserChanged{
			UserID: 42, Tables: []string{"claim_requirements", "claims"}, Operations: []string{"update"},
			Columns: []string{"status", "updated_at"}, Source: gtidPos}),
		// nil slices encode as [], allow-listed values, a position without GTID
		notice.NewUserChanged(src, prefix, commit, notice.UserChanged{
			UserID: 7, Values: map[string]any{"status": "active", "score": 3, "note": nil}, Source: filePos}),
		// a user id above 2^53 (subject stays exact), names JSON must escape
		notice.NewUserChanged(src, prefix, commit, notice.UserChanged{
			UserID: 9007199254740993, Tables: []string{"users"}, Operations: []string{"delete", "insert"},
			Columns: []string{`a"b<c>&d`, "naïve"}, Source: gtidPos}),
		notice.NewQueueChanged(src, prefix, notice.KindEntered, commit, notice.QueueChanged{
			UserID: 42, OpenClaims: 2, PendingRequirements: 3, OldestPendingAt: &oldest, Source: gtidPos}),
		notice.NewQueueChanged(src, prefix, notice.KindUpdated, commit, notice.QueueChanged{
			UserID: 42, OpenClaims: 1, PendingRequirements: 1, OldestPendingAt: &oldest, Source: gtidPos}),
		notice.NewQueueChanged(src, prefix, notice.KindLeft, commit, notice.QueueChanged{
			UserID: 43, OpenClaims: 0, PendingRequirements: 0, Source: filePos}),
	}
	rc, err := notice.NewReconcileCompleted(src, prefix, commit, notice.ReconcileCompleted{
		RunID: "2024-05-06T07:00:00.123Z", Reason: "periodic",
		StartedAt: time.Date(2024, 5, 6, 7, 0, 0, 123000000, time.UTC), FinishedAt: time.Date(2024, 5, 6, 7, 0, 4, 0, time.UTC),
		Users: 50000, Queued: 1234, Entered: 1, Left: 2, Updated: 3, Source: gtidPos})
	if err != nil {
		return fmt.Errorf("reconcile notice: %w", err)
	}
	dl, err := notice.NewDeadLetter(src, prefix, commit, notice.DeadLetter{
		Table: "claims", Operation: "update", Seq: 3, Error: "lookup claim 9: timeout", UserIDs: []uint64{42, 43}, Source: gtidPos})
	if err != nil {
		return fmt.Errorf("deadletter notice: %w", err)
	}
	// A txn with whitespace: the id is sanitized to a valid Nats-Msg-Id.
	dl2, err := notice.NewDeadLetter(src, prefix, commit, notice.DeadLetter{
		Table: "user_addresses", Operation: "insert", Seq: 0, Error: "bad row", Source: notice.SourcePosition{Txn: "odd bin.000001:4"}})
	if err != nil {
		return fmt.Errorf("deadletter notice: %w", err)
	}
	msgs = append(msgs, rc, dl, dl2)

	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	for _, m := range msgs {
		if err := enc.Encode(fixture{Subject: m.Subject, ID: m.ID, Data: string(m.Data)}); err != nil {
			return fmt.Errorf("write fixture %s: %w", m.ID, err)
		}
	}
	return nil
}
