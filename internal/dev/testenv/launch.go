package testenv

// Launch starts a private server like StartMariaDB, for programs that are
// not tests (the benchmark harness, cmd/bench). The caller owns the server
// and must Close it; the fault helpers (Stop, Kill, Start) need a testing.TB
// and are for tests.
func Launch(opt MariaDBOptions) (*MariaDB, error) {
	return newMariaDB(opt)
}

// Close kills a server started by Launch and removes its data folder.
// Servers from StartMariaDB or SharedMariaDB are closed by their cleanup.
func (m *MariaDB) Close() {
	m.destroy()
}
