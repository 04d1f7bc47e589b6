package canal

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// ErrFatal marks errors that a retry cannot fix: the binlog position is gone
// or invalid, the source is misconfigured (binlog off, not ROW, row image
// not FULL, wrong flavor, our server_id), a tracked table or wanted column is
// missing, or a row does not match the table's schema. An operator has to
// act; Run returns such errors instead of retrying. Test with errors.Is.
var ErrFatal = errors.New("fatal")

// fatalf formats an error that wraps ErrFatal (and any %w operands).
func fatalf(format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrFatal, fmt.Errorf(format, args...))
}

// handlerError carries an error returned by the caller's handler, so that
// Run hands it back instead of retrying: the handler owns its failures, and
// retrying would hand the same transaction over again.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// Server errors on the binlog dump connection that no retry fixes.
// MySQL and MariaDB report purged binlogs, positions past the end of a file,
// missing GTID state and a replica with the same server_id all as 1236
// (ER_MASTER_FATAL_ERROR_READING_BINLOG); see go-mysql issue #459. The
// server's own message (kept in the error) says which.
var fatalServerCodes = map[uint16]string{
	mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG: "the server cannot send the binlog from this position (purged, past the end of a file, unknown GTID, or another replica with the same server_id)",
	mysql.ER_MASTER_HAS_PURGED_REQUIRED_GTIDS:  "the server purged binlogs holding GTIDs we still need",
}

// classify marks server errors of the binlog stream that a retry cannot fix
// as fatal; lost positions also wrap ErrPositionGone. It is called only
// after the stream's preflight logged in with the same user and password.
func classify(cfg Config, err error) error {
	var my *mysql.MyError
	// go-mysql formats the error of the dump request with %v (canal/sync.go,
	// "start sync replication at ... error %v"), so the server's error code
	// survives only as text there.
	denied := strings.Contains(err.Error(), fmt.Sprintf("ERROR %d (28000)", mysql.ER_ACCESS_DENIED_ERROR))
	if !errors.As(err, &my) && !denied {
		return err
	}
	if denied || my.Code == mysql.ER_ACCESS_DENIED_ERROR {
		// MariaDB answers a binlog dump by a user without REPLICATION
		// SLAVE with ERROR 1045 "Access denied ... (using password: YES)",
		// the error of a wrong password; but the same credentials have
		// just logged in, so the privilege is what is missing.
		return fatalf("source user %q may log in but was refused the binlog (%w): it lacks REPLICATION SLAVE: GRANT REPLICATION SLAVE ON *.* TO the source user (see deploy/mysql/grants.sql)",
			cfg.User, err)
	}
	hint, ok := fatalServerCodes[my.Code]
	if !ok {
		if p := privileges(cfg, err); p != err {
			return p // REPLICATION SLAVE missing: no retry will grant it
		}
		return err
	}
	if strings.Contains(my.Message, "same server") {
		// "A slave with the same server_uuid/server_id as this slave has
		// connected to the master": the position is fine, the id is not.
		return fatalf("binlog stream: server error %d: another replica uses server_id %d: set source.server_id to a unique value: %w", my.Code, cfg.ServerID, err)
	}
	return fatalf("%w: server error %d: %s: %w", ErrPositionGone, my.Code, hint, err)
}

// skippedStatements counts binlog statements go-mysql could not parse and
// skipped (typically DDL its SQL parser does not know, such as CREATE
// TRIGGER, or MariaDB-only syntax). Such a statement may have changed a
// tracked table's schema without the schema cache noticing.
var skippedStatements atomic.Uint64

// SkippedStatements returns how many binlog statements were skipped because
// go-mysql could not parse them, since the process started (for a metric).
func SkippedStatements() uint64 { return skippedStatements.Load() }
