package lookup

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// BinaryLog is one file of SHOW BINARY LOGS.
type BinaryLog struct {
	Name string
	Size uint64
}

// BinaryLogs lists the binlog files the server still has, oldest first
// (needs REPLICATION CLIENT / BINLOG MONITOR).
func (l *Lookup) BinaryLogs(ctx context.Context) ([]BinaryLog, error) {
	rows, err := l.db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("show binary logs: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("show binary logs: %w", err)
	}
	var out []BinaryLog
	for rows.Next() {
		// Log_name, File_size[, Encrypted]: scan what is there.
		var b BinaryLog
		dest := []any{&b.Name, &b.Size}
		for len(dest) < len(cols) {
			dest = append(dest, new(sql.RawBytes))
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("show binary logs: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// Ping checks the lookup server answers.
func (l *Lookup) Ping(ctx context.Context) error { return l.db.PingContext(ctx) }

// BytesBehind is how many binlog bytes lie between (file, pos) and the end
// of the newest file, from a SHOW BINARY LOGS listing; ok is false when the
// file is not listed (purged, or another server's file).
func BytesBehind(logs []BinaryLog, file string, pos uint32) (behind uint64, ok bool) {
	for i, b := range logs {
		if b.Name != file {
			continue
		}
		if uint64(pos) < b.Size {
			behind = b.Size - uint64(pos)
		}
		for _, later := range logs[i+1:] {
			behind += later.Size
		}
		return behind, true
	}
	return 0, false
}

// GlobalVars reads the named global variables (absent ones are missing
// from the map).
func (l *Lookup) GlobalVars(ctx context.Context, names ...string) (map[string]string, error) {
	out := map[string]string{}
	if len(names) == 0 {
		return out, nil
	}
	q := "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('" + strings.Join(names, "','") + "')"
	rows, err := l.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("show global variables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("show global variables: %w", err)
		}
		out[strings.ToLower(k)] = v
	}
	return out, rows.Err()
}
