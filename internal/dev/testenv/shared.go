package testenv

import (
	"os"
	"sync"
	"testing"
)

var shared struct {
	sync.Mutex
	main bool // Main is running the tests
	db   *MariaDB
	err  error
}

// Main runs the package's tests and then stops the shared servers. Call it
// from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	shared.Lock()
	shared.main = true
	shared.Unlock()

	code := m.Run()

	shared.Lock()
	if shared.db != nil {
		shared.db.destroy()
		shared.db = nil
	}
	shared.Unlock()
	os.Exit(code)
}

// SharedMariaDB returns the test binary's shared private MariaDB (binlog on,
// ROW, FULL row image, server_id 1000), starting it on first use. Tests give
// their databases their own names (see Name) and must not Stop/Kill/Start it;
// fault tests use StartMariaDB. The package's TestMain must call Main, which
// stops the server when the tests are done.
func SharedMariaDB(tb testing.TB) *MariaDB {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.main {
		tb.Fatal("testenv: SharedMariaDB needs TestMain to call testenv.Main(m)")
	}
	if shared.db == nil && shared.err == nil {
		shared.db, shared.err = newMariaDB(MariaDBOptions{ServerID: 1000})
	}
	if shared.err != nil {
		tb.Fatalf("testenv: shared mariadb: %v", shared.err)
	}
	return shared.db
}

// isShared guards the fault helpers: other tests use the shared server.
func (m *MariaDB) isShared() bool {
	shared.Lock()
	defer shared.Unlock()
	return m == shared.db
}
