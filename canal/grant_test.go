package canal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"dialsync/internal/dev/testenv"
)

// A binlog user without REPLICATION SLAVE logs in but is refused the dump
// (MariaDB: ERROR 1045, the wrong-password error). Run must stop at once
// naming the missing grant, not reconnect forever.
func TestMissingReplicationSlaveIsFatal(t *testing.T) {
	db := testenv.SharedMariaDB(t)
	f := newFixture(t, db)
	user := fmt.Sprintf("norepl_%d", time.Now().UnixNano()%1_000_000)
	db.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw'", user),
		fmt.Sprintf("GRANT BINLOG MONITOR ON *.* TO '%s'@'%%'", user),
		fmt.Sprintf("GRANT SELECT ON `%s`.* TO '%s'@'%%'", f.dbn, user))
	t.Cleanup(func() { db.Exec(t, fmt.Sprintf("DROP USER '%s'@'%%'", user)) })
	cfg := f.cfg
	cfg.User, cfg.Password = user, "pw"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := Run(ctx, cfg, f.head(t), nil)
	if ctx.Err() != nil || !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "GRANT REPLICATION SLAVE") || !strings.Contains(err.Error(), user) {
		t.Fatalf("got %v after %s, want a fatal error naming the REPLICATION SLAVE grant at once", err, time.Since(start))
	}
}
