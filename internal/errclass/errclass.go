// Package errclass tells transient server errors (retry with backoff,
// forever) from permanent ones (no retry can fix them: an operator must
// act). The apply loop retries every failed server call; an error this
// package calls permanent stops the pipeline instead, with the server's
// message and the checkpoint untouched, so that a missing privilege, a
// rule that cannot run or a value PostgreSQL rejects is not hidden behind a
// retry loop that looks healthy.
//
// When unsure, an error is transient: a wrong "permanent" stops a pipeline
// that a restart recovers, a wrong "transient" hides a fault forever, so the
// lists below name only errors that cannot go away by themselves.
package errclass

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// Permanent wraps err as permanent. The result implements Fatal() bool, the
// interface internal/apply checks, so the loop stops on it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Permanentf formats a permanent error (%w allowed).
func Permanentf(format string, a ...any) error { return permanent{fmt.Errorf(format, a...)} }

type permanent struct{ err error }

func (e permanent) Error() string { return e.err.Error() }
func (e permanent) Unwrap() error { return e.err }
func (e permanent) Fatal() bool   { return true }

// mysqlPermanent are MySQL/MariaDB server error codes that no retry fixes
// (https://dev.mysql.com/doc/mysql-errors/8.0/en/server-error-reference.html).
var mysqlPermanent = map[uint16]string{
	1044: "access denied to the database",            // ER_DBACCESS_DENIED_ERROR
	1049: "unknown database",                         // ER_BAD_DB_ERROR
	1052: "ambiguous column in the rule",             // ER_NON_UNIQ_ERROR
	1054: "unknown column",                           // ER_BAD_FIELD_ERROR
	1055: "the rule violates ONLY_FULL_GROUP_BY",     // ER_WRONG_FIELD_WITH_GROUP
	1064: "SQL syntax error",                         // ER_PARSE_ERROR
	1142: "the user lacks a table privilege",         // ER_TABLEACCESS_DENIED_ERROR
	1143: "the user lacks a column privilege",        // ER_COLUMNACCESS_DENIED_ERROR
	1146: "unknown table",                            // ER_NO_SUCH_TABLE
	1149: "SQL syntax error",                         // ER_SYNTAX_ERROR
	1227: "the user lacks a privilege",               // ER_SPECIFIC_ACCESS_DENIED_ERROR
	1241: "a subquery returns more than one column",  // ER_OPERAND_COLUMNS
	1305: "unknown function or procedure",            // ER_SP_DOES_NOT_EXIST
	1630: "unknown function",                         // ER_FUNC_INEXISTENT_WARNING
	1370: "the user may not execute a routine",       // ER_PROCACCESS_DENIED_ERROR
	1582: "wrong arguments to a native function",     // ER_WRONG_PARAMCOUNT_TO_NATIVE_FCT
	1583: "wrong arguments to a function",            // ER_WRONG_PARAMETERS_TO_NATIVE_FCT
	3819: "a check constraint on the server refused", // ER_CHECK_CONSTRAINT_VIOLATED
}

// pgPermanentClasses are PostgreSQL SQLSTATE classes no retry fixes
// (https://www.postgresql.org/docs/current/errcodes-appendix.html): data
// exceptions (a value PostgreSQL rejects, such as invalid UTF-8), integrity
// violations, invalid authorization, invalid schema names, syntax errors
// and access rule violations (missing privileges, unknown tables and
// columns), feature not supported.
var pgPermanentClasses = map[string]string{
	"0A": "feature not supported",
	"22": "a value PostgreSQL rejects",
	"23": "an integrity constraint refused the write",
	"28": "invalid authorization",
	"3F": "invalid schema name",
	"42": "syntax error, missing privilege or unknown object",
}

// IsPermanent reports whether err cannot be fixed by retrying, and a short
// reason.
func IsPermanent(err error) (bool, string) {
	if err == nil {
		return false, ""
	}
	var p permanent
	if errors.As(err, &p) {
		return true, "permanent"
	}
	var my *mysql.MyError
	if errors.As(err, &my) {
		if r, ok := mysqlPermanent[my.Code]; ok {
			return true, r
		}
		return false, ""
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) && len(pg.Code) == 5 {
		if r, ok := pgPermanentClasses[strings.ToUpper(pg.Code[:2])]; ok {
			return true, r
		}
	}
	return false, ""
}
