package preflight

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/dbschema"
)

// CheckPostgres pings PostgreSQL and checks, without changing anything,
// that `dialsync run` can use the schema as this user finds it:
//   - not there yet: run creates it, which needs CREATE on the database;
//   - there but empty or older than this binary: run migrates it, which
//     needs CREATE on the schema and the ownership of its tables;
//   - at this binary's version: run only reads and writes rows, which needs
//     USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on its tables
//     (USAGE on its sequences): no CREATE at all;
//   - newer than this binary: refused (upgrade dialsync).
//
// Each case the user can handle is OK (nothing to fix); otherwise FAIL with
// the GRANT (deploy/postgres/grants.sql).
func CheckPostgres(ctx context.Context, pool *pgxpool.Pool, schema, where string) Result {
	const name = "postgres"
	if err := pool.Ping(ctx); err != nil {
		return fail(name, "check postgres.dsn (DIALSYNC_POSTGRES_DSN) and that the server is up",
			"cannot connect to %s: %v", where, err)
	}
	queryFailed := func(err error) Result {
		return fail(name, "see the error: a query on PostgreSQL failed", "%s: a query failed: %v", where, err)
	}
	var user, db string
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT current_user, current_database(),
		EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&user, &db, &exists); err != nil {
		return queryFailed(err)
	}
	qUser, qDB, qSchema := pgx.Identifier{user}.Sanitize(), pgx.Identifier{db}.Sanitize(), pgx.Identifier{schema}.Sanitize()
	ask := func(q string, args ...any) (bool, error) {
		var b bool
		err := pool.QueryRow(ctx, q, args...).Scan(&b)
		return b, err
	}
	if !exists {
		can, err := ask(`SELECT has_database_privilege(current_database(), 'CREATE')`)
		if err != nil {
			return queryFailed(err)
		}
		if !can {
			return fail(name, fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s; or, as an administrator, CREATE SCHEMA %s AUTHORIZATION %s; (see deploy/postgres/grants.sql)", qDB, qUser, qSchema, qUser),
				"%s: schema %s does not exist and user %s may not create it (no CREATE on database %s): `dialsync run` would stop with permission denied", where, schema, user, db)
		}
		return ok(name, "%s: schema %s does not exist yet: `dialsync run` creates it (user %s may CREATE in database %s)", where, schema, user, db)
	}
	usage, err := ask(`SELECT has_schema_privilege($1, 'USAGE')`, schema)
	if err != nil {
		return queryFailed(err)
	}
	if !usage {
		return fail(name, fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s; (and the table grants of deploy/postgres/grants.sql)", qSchema, qUser),
			"%s: user %s has no USAGE on schema %s", where, user, schema)
	}
	v, err := dbschema.Version(ctx, pool, schema)
	if err != nil {
		return queryFailed(err)
	}
	latest := dbschema.LatestVersion()
	switch {
	case v > latest:
		return fail(name, "upgrade dialsync: this binary is older than the schema",
			"%s: schema %s is at version %d, newer than this binary's %d", where, schema, v, latest)
	case v < latest:
		return checkMigratable(ctx, pool, where, schema, user, v, latest)
	}
	missing, err := missingRowPrivileges(ctx, pool, schema)
	if err != nil {
		return queryFailed(err)
	}
	if len(missing) > 0 {
		return fail(name, fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s; GRANT USAGE ON ALL SEQUENCES IN SCHEMA %s TO %s;", qSchema, qUser, qSchema, qUser),
			"%s: schema %s at version %d, but user %s lacks %s", where, schema, v, user, strings.Join(missing, ", "))
	}
	return ok(name, "%s, schema %s at version %d, usable by %s", where, schema, v, user)
}

// checkMigratable judges a schema that run has to migrate: CREATE on it and every table
// owned by (a role of) the user.
func checkMigratable(ctx context.Context, pool *pgxpool.Pool, where, schema, user string, v, latest int) Result {
	var create bool
	var notOwned []string
	err := pool.QueryRow(ctx, `SELECT has_schema_privilege($1, 'CREATE'),
		COALESCE(array_agg(c.relname ORDER BY c.relname) FILTER (WHERE NOT pg_has_role(c.relowner, 'USAGE')), '{}')
		FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'S')
		WHERE n.nspname = $1`, schema).Scan(&create, &notOwned)
	if err != nil {
		return fail("postgres", "see the error: a query on PostgreSQL failed", "%s: a query failed: %v", where, err)
	}
	what := fmt.Sprintf("schema %s is at version %d and `dialsync run` migrates it to %d", schema, v, latest)
	if v == 0 {
		what = fmt.Sprintf("schema %s exists and has no dialsync tables yet: `dialsync run` creates them", schema)
	}
	if !create || len(notOwned) > 0 {
		why := "no CREATE on the schema"
		if create {
			why = "it does not own " + strings.Join(notOwned, ", ")
		}
		return fail("postgres", fmt.Sprintf("let the schema's owner run `dialsync run` once (it migrates), or GRANT CREATE ON SCHEMA %s TO %s; and make it the owner of the schema's tables (see deploy/postgres/grants.sql)",
			pgx.Identifier{schema}.Sanitize(), pgx.Identifier{user}.Sanitize()),
			"%s: %s, but user %s may not: %s", where, what, user, why)
	}
	return ok("postgres", "%s: %s (user %s may)", where, what, user)
}

// missingRowPrivileges lists what the user lacks to read and write rows of
// the schema's tables (schema_migrations: read only) and sequences.
func missingRowPrivileges(ctx context.Context, pool *pgxpool.Pool, schema string) ([]string, error) {
	rows, err := pool.Query(ctx, `SELECT c.relname, p.priv
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
		LATERAL (SELECT unnest(CASE
			WHEN c.relkind = 'S' THEN ARRAY['USAGE']
			WHEN c.relname = 'schema_migrations' THEN ARRAY['SELECT']
			ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END) AS priv) p
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S')
		  AND NOT CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, p.priv)
		               ELSE has_table_privilege(c.oid, p.priv) END
		ORDER BY c.relname, p.priv`, schema)
	if err != nil {
		return nil, err
	}
	var out []string
	var rel, priv string
	_, err = pgx.ForEachRow(rows, []any{&rel, &priv}, func() error {
		out = append(out, priv+" on "+rel)
		return nil
	})
	return out, err
}
