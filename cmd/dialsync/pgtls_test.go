package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/config"
	"dialsync/internal/dev/testenv"
)

// TLS to PostgreSQL, end to end: a private cluster with ssl = on, a server
// certificate for "localhost" signed by a test CA, and a pg_hba.conf that
// accepts TCP clients only over TLS (so a plaintext connection from
// dialsync would be refused). dialsync takes PostgreSQL's TLS settings from
// the libpq DSN: with sslmode=verify-full and the right sslrootcert it
// streams; a wrong CA, a host name the certificate does not name, or a CA
// file that is not there are refused with one line naming postgres and the
// problem.
func TestPostgresTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "dialsync-pg-ca")
	wrongCA := newTestCA(t, dir, "unrelated-pg-ca")
	certFile, keyFile := ca.leafFor(t, dir, "pg", []string{"localhost"}, nil)

	pgs := testenv.StartPostgres(t, testenv.PostgresOptions{
		Settings: map[string]string{"ssl": "on"},
		Setup: func(s *testenv.Postgres) error {
			// ssl_cert_file and ssl_key_file default to server.crt and
			// server.key in the data folder; the key must belong to the
			// server's user with mode 0600, or the server refuses it.
			for _, f := range []struct{ from, to string }{
				{certFile, "server.crt"}, {keyFile, "server.key"},
			} {
				b, err := os.ReadFile(f.from)
				if err != nil {
					return err
				}
				to := filepath.Join(s.DataDir(), f.to)
				if err := os.WriteFile(to, b, 0o600); err != nil {
					return err
				}
				if err := s.Own(to); err != nil {
					return err
				}
			}
			hba := filepath.Join(s.DataDir(), "pg_hba.conf")
			if err := os.WriteFile(hba, []byte("local all all trust\nhostssl all all 127.0.0.1/32 trust\n"), 0o600); err != nil {
				return err
			}
			return s.Own(hba)
		},
	})
	dsn := func(host, rootCert string) string {
		return fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=verify-full&sslrootcert=%s&connect_timeout=5", host, pgs.Port(), rootCert)
	}

	// The server really refuses plaintext over TCP.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pgs.Ping(ctx); err == nil || !strings.Contains(err.Error(), "no encryption") {
		t.Fatalf("plaintext connection: %v, want refused by pg_hba.conf (no encryption)", err)
	}

	p := newPipe(t, pipeOpt{})
	// The harness reads the checkpoint and the queue on this cluster, over
	// TLS too.
	pool, err := pgxpool.New(ctx, dsn("localhost", ca.file))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("test client over TLS: %v", err)
	}
	p.pg = pool
	p.editConfig(func(c *config.Config) { c.Postgres.DSN = dsn("localhost", ca.file) })

	startCaughtUp(t, p)
	u, _, _ := queuedUser(t, p)
	skip := len(p.notices())
	g := sessionTxn(t, p, fmt.Sprintf("UPDATE users SET status = 'inactive' WHERE id = %d", u))
	p.waitCaughtUp(20 * time.Second)
	noticeFor(t, p.userChangedAfter(skip), u, g)
	if _, ok := p.actualQueue()[u]; ok {
		t.Fatalf("user %d still queued after the change", u)
	}
	p.assertNoDrift()
	// dialsync's sessions (its pool, the lease) are TLS sessions.
	var tlsOthers, plain int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE s.ssl AND a.pid <> pg_backend_pid()), count(*) FILTER (WHERE NOT s.ssl)
		FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.backend_type = 'client backend'`).Scan(&tlsOthers, &plain); err != nil {
		t.Fatal(err)
	}
	if tlsOthers == 0 || plain != 0 {
		t.Errorf("client sessions: %d other TLS, %d plaintext; want dialsync's over TLS only", tlsOthers, plain)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("clean stop: exit %d", code)
	}
	stored := p.checkpointGTID()

	for _, tc := range []struct {
		name, dsn string
		want      []string
	}{
		{"wrong CA", dsn("localhost", wrongCA.file), []string{"postgres", "certificate", "not signed by the CA in sslrootcert"}},
		{"host name not in the certificate", dsn("127.0.0.1", ca.file), []string{"postgres", "certificate", "127.0.0.1", "verify-full"}},
		{"CA file missing", dsn("localhost", filepath.Join(dir, "nope.pem")), []string{"postgres.dsn", "sslrootcert", "nope.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.editConfig(func(c *config.Config) { c.Postgres.DSN = tc.dsn })
			code, line := runUntilExit(t, p)
			t.Logf("exit %d: %s", code, line)
			if code == 0 {
				t.Errorf("exit code 0")
			}
			if !strings.HasPrefix(line, "dialsync: ") {
				t.Errorf("the last line is not dialsync's one-line error: %q", line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("the error line does not say %q: %s", w, line)
				}
			}
			if ck := p.checkpointGTID(); ck != stored {
				t.Errorf("checkpoint moved: %s -> %s", stored, ck)
			}
		})
	}
}
