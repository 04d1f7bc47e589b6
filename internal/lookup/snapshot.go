package lookup

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"dialsync/internal/idmap"
)

// Snapshot is the source's claim -> user and user -> current address maps
// together with the binlog position they are consistent with.
type Snapshot struct {
	File     string
	Pos      uint32
	GTIDSet  string // MariaDB's GTID position at File:Pos
	Owners   *idmap.Map
	Pointers *idmap.Map
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
	if s.Owners, s.Pointers, err = readMaps(ctx, conn); err != nil {
		return s, false, fmt.Errorf("consistent snapshot: %w", err)
	}
	return s, true, nil
}

// mapPage is how many map rows one query reads. go-mysql's driver holds a
// whole result set in memory (~150 bytes a row here), so the maps are read
// in pages of the primary key, inside the caller's consistent snapshot.
var mapPage = 20_000 // a var for the paging test

// readMaps reads the claim -> user and user -> address maps on conn, in
// the snapshot of its open transaction.
func readMaps(ctx context.Context, conn *sql.Conn) (owners, pointers *idmap.Map, err error) {
	if owners, err = pagedMap(ctx, conn, "SELECT id, user_id FROM claims", ""); err != nil {
		return nil, nil, fmt.Errorf("claim owners: %w", err)
	}
	if pointers, err = pagedMap(ctx, conn, "SELECT id, current_user_address_id FROM users", "current_user_address_id IS NOT NULL"); err != nil {
		return nil, nil, fmt.Errorf("user address pointers: %w", err)
	}
	return owners, pointers, nil
}

// pagedMap reads "<sel> [WHERE cond]" in id order, mapPage rows a query
// (keyset pagination on id), into a compact map loaded in key order.
func pagedMap(ctx context.Context, conn *sql.Conn, sel, cond string) (*idmap.Map, error) {
	m := idmap.New(0)
	var last uint64
	for first := true; ; first = false {
		where := cond
		args := []any{}
		if !first {
			where = strings.TrimPrefix(cond+" AND id > ?", " AND ")
			args = append(args, last)
		}
		q := sel
		if where != "" {
			q += " WHERE " + where
		}
		q += " ORDER BY id LIMIT " + strconv.Itoa(mapPage)
		rows, err := conn.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		n := 0
		var a, b uint64
		for rows.Next() {
			if err := rows.Scan(&a, &b); err != nil {
				rows.Close()
				return nil, err
			}
			m.Append(a, b)
			last = a
			n++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
		if n < mapPage {
			return m, nil
		}
	}
}
