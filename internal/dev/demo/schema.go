// Package demo holds the source schema (the Laravel tables dialsync tracks)
// and the deterministic data used by the demo, the tests and the benchmarks:
// a fast seeder and a workload generator of realistic source transactions.
//
// Everything here WRITES to the database it is given: point it at a demo or
// test database, never at a real source.
package demo

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"strings"

	"dialsync/handlers"
)

// Schema is the DDL of the source tables: users, user_addresses, claims,
// claim_requirements, claim_vehicle_packages, plus the untracked audit_log.
//
//go:embed schema.sql
var Schema string

// Tables lists the five tracked source tables, in dependency order.
var Tables = handlers.Tables()

// UntrackedTable is a table in Schema that dialsync does not track.
const UntrackedTable = "audit_log"

// Statements splits Schema into single statements (the driver sends one
// statement per query: multi-statements are off).
func Statements() []string {
	var b strings.Builder
	for line := range strings.SplitSeq(Schema, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue // comment-only lines would leave empty statements behind
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	var out []string
	for stmt := range strings.SplitSeq(b.String(), ";\n") {
		if s := strings.TrimSpace(stmt); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// CreateSchema creates the tables in db's current database (IF NOT EXISTS,
// so it is safe to run twice).
func CreateSchema(ctx context.Context, db *sql.DB) error {
	for _, stmt := range Statements() {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("create demo schema: %w", err)
		}
	}
	return nil
}
