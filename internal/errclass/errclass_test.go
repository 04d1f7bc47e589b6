package errclass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsPermanent(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection lost", io.ErrUnexpectedEOF, false},
		{"cancelled", context.Canceled, false},
		{"mysql syntax", fmt.Errorf("rule: %w", mysql.NewError(1064, "You have an error in your SQL syntax")), true},
		{"mysql unknown column", mysql.NewError(1054, "Unknown column 'x'"), true},
		{"mysql table grant", mysql.NewError(1142, "SELECT command denied"), true},
		{"mysql lock wait", mysql.NewError(1205, "Lock wait timeout exceeded"), false},
		{"mysql deadlock", mysql.NewError(1213, "Deadlock found"), false},
		{"mysql server gone", mysql.NewError(2006, "MySQL server has gone away"), false},
		{"pg invalid utf8", &pgconn.PgError{Code: "22021", Message: "invalid byte sequence for encoding \"UTF8\""}, true},
		{"pg permission", fmt.Errorf("write: %w", &pgconn.PgError{Code: "42501", Message: "permission denied for table call_queue"}), true},
		{"pg undefined table", &pgconn.PgError{Code: "42P01"}, true},
		{"pg serialization", &pgconn.PgError{Code: "40001"}, false},
		{"pg deadlock", &pgconn.PgError{Code: "40P01"}, false},
		{"pg admin shutdown", &pgconn.PgError{Code: "57P01"}, false},
		{"pg too many connections", &pgconn.PgError{Code: "53300"}, false},
		{"marked", Permanentf("rules.queue_sql: open_claims of user 3: %w", errors.New("not an integer")), true},
	}
	for _, c := range cases {
		if got, why := IsPermanent(c.err); got != c.want {
			t.Errorf("%s: IsPermanent = %v (%s), want %v", c.name, got, why, c.want)
		}
	}
	var f interface{ Fatal() bool }
	if !errors.As(fmt.Errorf("x: %w", Permanent(io.EOF)), &f) || !f.Fatal() {
		t.Error("Permanent does not carry Fatal() through wrapping")
	}
	if !errors.Is(Permanent(io.EOF), io.EOF) {
		t.Error("Permanent does not unwrap")
	}
}
