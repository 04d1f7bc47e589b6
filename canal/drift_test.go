package canal

import (
	"context"
	"errors"
	"strings"
	"testing"

	"dialsync/change"
	"dialsync/internal/dev/testenv"
)

// While lagging across a DDL that keeps the column count (drop one column,
// add another), go-mysql decodes the old rows with the live schema
// (issue #905): the row-length check cannot see it, values shift by one
// column. The adapter must stop rather than hand on shifted values. (The
// value-type check catches these; a shift between columns of the same kind,
// or of NULLs, stays invisible: see drift.go.)
func TestLaggingSameWidthDDLIsNotMisattributed(t *testing.T) {
	for _, tc := range []struct {
		name string
		ddl  string
	}{
		// notes (TEXT) goes, nick arrives at the end: same width; bio's
		// bytes shift into updated_at (a TIMESTAMP).
		{"drop and add", `ALTER TABLE DB.users DROP COLUMN notes, ADD COLUMN nick VARCHAR(10) NULL`},
		// is_enabled moves in front: first_name would read "ann@x.test",
		// status 1 and is_enabled "Ann".
		{"reorder", `ALTER TABLE DB.users MODIFY COLUMN is_enabled TINYINT(1) NOT NULL DEFAULT 1 AFTER id`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testenv.SharedMariaDB(t))
			from := f.head(t)
			f.exec(t, `INSERT INTO DB.users (id, first_name, email, status, is_enabled, balance, notes, bio, updated_at)
				VALUES (7, 'Ann', 'ann@x.test', 'active', 1, 12.50, 'n', 'b', '2024-01-02 03:04:05')`, tc.ddl)
			var got []change.Change
			err := Stream(context.Background(), f.cfg, from, func(_ context.Context, txn *change.Txn) error {
				got = append(got, txn.Changes...)
				if len(txn.Changes) == 0 && len(got) > 0 {
					return errStop // the DDL transaction: everything before it was handed on
				}
				return nil
			})
			for _, c := range got {
				if c.After[0] != int64(7) || c.After[2] != "ann@x.test" || c.After[4] != int64(1) {
					t.Fatalf("misattributed values handed on: %#v (err %v)", c.After, err)
				}
			}
			if !errors.Is(err, ErrFatal) {
				t.Fatalf("got %v and %d changes, want a fatal error and no change", err, len(got))
			}
			for _, w := range []string{"users", "mysql-bin.", "checkpoint reset --to-head"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			t.Logf("error: %v", err)
		})
	}
}

var errStop = errors.New("stop")
