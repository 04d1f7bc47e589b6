package lookup

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// checkRuleTypes runs the rule for no user and checks the types the server
// declares for its columns, so that a rule whose values dialsync cannot
// read (a string count, a numeric time) is refused at start, not at the
// first change. database/sql hides the declared types (go-mysql's driver
// has no ColumnTypes), so the query goes through the driver connection's
// own Execute, which returns the result's field definitions.
func (l *Lookup) checkRuleTypes(ctx context.Context) error {
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("rules.queue_sql: %w", err)
	}
	defer conn.Close()
	var fields []*mysql.Field
	err = conn.Raw(func(dc any) error {
		ex, ok := dc.(interface {
			Execute(string, ...any) (*mysql.Result, error)
		})
		if !ok {
			return nil // another driver: the first evaluation judges the values
		}
		r, err := ex.Execute(l.render(l.inPredicate([]uint64{0})))
		if err != nil {
			return err
		}
		defer r.Close()
		if r.Resultset != nil {
			fields = r.Fields
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rules.queue_sql does not run: %w", flatError{err})
	}
	var bad []string
	for _, f := range fields {
		name := string(f.Name)
		switch name {
		case "user_id", "open_claims", "pending_requirements":
			if !integerType(f, name != "user_id") {
				bad = append(bad, fmt.Sprintf("%s is %s, want an integer", name, typeName(f.Type)))
			}
		case "oldest_pending_at":
			if !timeType(f) {
				bad = append(bad, fmt.Sprintf("oldest_pending_at is %s, want DATETIME, TIMESTAMP, DATE or NULL", typeName(f.Type)))
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("rules.queue_sql returns columns dialsync cannot read: %s: CAST them in the rule's SELECT list", strings.Join(bad, "; "))
	}
	return nil
}

// integerType: the numeric types (SUM over integers gives DECIMAL; a value
// with a fraction is refused when it comes). A NULL column (a literal
// NULL) is a zero count, never a user id.
func integerType(f *mysql.Field, nullOK bool) bool {
	switch f.Type {
	case mysql.MYSQL_TYPE_TINY, mysql.MYSQL_TYPE_SHORT, mysql.MYSQL_TYPE_LONG, mysql.MYSQL_TYPE_INT24,
		mysql.MYSQL_TYPE_LONGLONG, mysql.MYSQL_TYPE_YEAR, mysql.MYSQL_TYPE_BIT,
		mysql.MYSQL_TYPE_DECIMAL, mysql.MYSQL_TYPE_NEWDECIMAL, mysql.MYSQL_TYPE_FLOAT, mysql.MYSQL_TYPE_DOUBLE:
		return true
	case mysql.MYSQL_TYPE_NULL:
		return nullOK
	}
	return false
}

// timeType: the date and time types, a NULL column, and text (parsed as
// "YYYY-MM-DD[ hh:mm:ss]" at run time, as DATE_FORMAT gives it).
func timeType(f *mysql.Field) bool {
	switch f.Type {
	case mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE,
		mysql.MYSQL_TYPE_TIMESTAMP2, mysql.MYSQL_TYPE_DATETIME2, mysql.MYSQL_TYPE_NULL,
		mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING, mysql.MYSQL_TYPE_STRING:
		return true
	}
	return false
}

func typeName(t uint8) string {
	switch t {
	case mysql.MYSQL_TYPE_TINY, mysql.MYSQL_TYPE_SHORT, mysql.MYSQL_TYPE_LONG, mysql.MYSQL_TYPE_INT24,
		mysql.MYSQL_TYPE_LONGLONG, mysql.MYSQL_TYPE_YEAR, mysql.MYSQL_TYPE_BIT,
		mysql.MYSQL_TYPE_DECIMAL, mysql.MYSQL_TYPE_NEWDECIMAL, mysql.MYSQL_TYPE_FLOAT, mysql.MYSQL_TYPE_DOUBLE:
		return "a number"
	case mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING, mysql.MYSQL_TYPE_STRING:
		return "text"
	case mysql.MYSQL_TYPE_TINY_BLOB, mysql.MYSQL_TYPE_MEDIUM_BLOB, mysql.MYSQL_TYPE_LONG_BLOB, mysql.MYSQL_TYPE_BLOB:
		return "a BLOB/TEXT"
	case mysql.MYSQL_TYPE_JSON:
		return "JSON"
	case mysql.MYSQL_TYPE_TIME, mysql.MYSQL_TYPE_TIME2:
		return "TIME"
	case mysql.MYSQL_TYPE_NULL:
		return "NULL"
	case mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE,
		mysql.MYSQL_TYPE_TIMESTAMP2, mysql.MYSQL_TYPE_DATETIME2:
		return "a date/time"
	}
	return fmt.Sprintf("type %d", t)
}
