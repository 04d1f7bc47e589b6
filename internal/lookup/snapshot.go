package lookup

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// Snapshot is the source's claim -> user and user -> current address maps
// together with the binlog position they are consistent with.
type Snapshot struct {
	File     string
	Pos      uint32
	GTIDSet  string // MariaDB's GTID position at File:Pos
	Owners   map[uint64]uint64
	Pointers map[uint64]uint64
}

// ConsistentSnapshot reads the maps in one consistent-snapshot transaction
// and the binlog position that snapshot corresponds to. MariaDB reports it
// exactly (Binlog_snapshot_file/position, see
// https://mariadb.com/kb/en/enhancements-for-start-transaction-with-consistent-snapshot/)
// and BINLOG_GTID_POS turns it into a GTID position. ok is false on servers
// that cannot say (MySQL): the caller then reads the head and the maps
// separately, which leaves a small window (documented in the README).
// No locks are taken.
func (l *Lookup) ConsistentSnapshot(ctx context.Context) (s Snapshot, ok bool, err error) {
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return s, false, fmt.Errorf("consistent snapshot: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		return s, false, fmt.Errorf("consistent snapshot: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") //nolint:errcheck // read-only
	rows, err := conn.QueryContext(ctx, "SHOW STATUS LIKE 'binlog_snapshot_%'")
	if err != nil {
		return s, false, fmt.Errorf("consistent snapshot: %w", err)
	}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			rows.Close()
			return s, false, fmt.Errorf("consistent snapshot: %w", err)
		}
		switch strings.ToLower(name) {
		case "binlog_snapshot_file":
			s.File = value
		case "binlog_snapshot_position":
			p, _ := strconv.ParseUint(value, 10, 32)
			s.Pos = uint32(p)
		}
	}
	rows.Close()
	if s.File == "" || s.Pos == 0 {
		return s, false, nil // not MariaDB
	}
	var gtid sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT BINLOG_GTID_POS(?, ?)", s.File, s.Pos).Scan(&gtid); err != nil {
		return s, false, fmt.Errorf("consistent snapshot: gtid at %s:%d: %w", s.File, s.Pos, err)
	}
	s.GTIDSet = gtid.String
	s.Owners, s.Pointers = map[uint64]uint64{}, map[uint64]uint64{}
	for _, q := range []struct {
		sql string
		m   map[uint64]uint64
	}{
		{"SELECT id, user_id FROM claims", s.Owners},
		{"SELECT id, current_user_address_id FROM users WHERE current_user_address_id IS NOT NULL", s.Pointers},
	} {
		rows, err := conn.QueryContext(ctx, q.sql)
		if err != nil {
			return s, false, fmt.Errorf("consistent snapshot: %w", err)
		}
		var a, b uint64
		for rows.Next() {
			if err := rows.Scan(&a, &b); err != nil {
				rows.Close()
				return s, false, fmt.Errorf("consistent snapshot: %w", err)
			}
			q.m[a] = b
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return s, false, fmt.Errorf("consistent snapshot: %w", err)
		}
		rows.Close()
	}
	return s, true, nil
}
