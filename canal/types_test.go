package canal

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/change"
	"dialsync/internal/dev/testenv"
	"dialsync/notice"
)

// The type matrix: one column of every MySQL/MariaDB type family, at its
// limits, decoded through Stream with a TableSpec that asks for every
// column, and compared with the forms Row's doc comment promises. It also
// checks that every decoded value can travel in a notice (allow-listed
// values) as valid JSON.

type typeCol struct {
	name, ddl string
}

// typeCols is the table, in column order. sql_mode ” lets zero dates in.
var typeCols = []typeCol{
	{"id", "BIGINT UNSIGNED NOT NULL PRIMARY KEY"},
	{"ti", "TINYINT NULL"}, {"tiu", "TINYINT UNSIGNED NULL"},
	{"si", "SMALLINT NULL"}, {"siu", "SMALLINT UNSIGNED NULL"},
	{"mi", "MEDIUMINT NULL"}, {"miu", "MEDIUMINT UNSIGNED NULL"},
	{"i", "INT NULL"}, {"iu", "INT UNSIGNED NULL"},
	{"bi", "BIGINT NULL"}, {"biu", "BIGINT UNSIGNED NULL"},
	{"dec", "DECIMAL(65,30) NULL"}, {"f", "FLOAT NULL"}, {"d", "DOUBLE NULL"},
	{"dt", "DATE NULL"}, {"tm", "TIME(6) NULL"}, {"dtm", "DATETIME(6) NULL"},
	{"ts", "TIMESTAMP(6) NULL DEFAULT NULL"}, {"yr", "YEAR NULL"},
	{"ch", "CHAR(10) CHARACTER SET utf8mb4 NULL"}, {"vc", "VARCHAR(50) CHARACTER SET utf8mb4 NULL"},
	{"tx", "TEXT CHARACTER SET utf8mb4 NULL"}, {"l1", "VARCHAR(20) CHARACTER SET latin1 NULL"},
	{"bn", "BINARY(4) NULL"}, {"vb", "VARBINARY(10) NULL"}, {"bl", "BLOB NULL"},
	{"en", "ENUM('a','b','c') NULL"}, {"st", "SET('x','y','z') NULL"}, {"bt", "BIT(10) NULL"},
	{"js", "JSON NULL"},
	{"gv", "BIGINT AS (i + 1) VIRTUAL"}, {"gs", "BIGINT AS (i * 2) STORED"},
}

type typeRow struct {
	values string     // the VALUES list for the non-generated columns
	want   change.Row // every column, generated ones included
}

var (
	maxRow = typeRow{
		values: `(1, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
			9223372036854775807, 18446744073709551615,
			'99999999999999999999999999999999999.999999999999999999999999999999', 1.5, 2.25,
			'2024-02-29', '838:59:59.000000', '2024-01-02 03:04:05.123456', '2038-01-19 03:14:07.999999', 2155,
			'ab😀', 'ü😀z', 'text 😀', x'e9ff', x'00010000', x'0000', x'00ff00', 'c', 'x,z', b'1000000001',
			'{"k": [1, "😀"]}')`,
		want: change.Row{int64(1), int64(127), int64(255), int64(32767), int64(65535), int64(8388607), int64(16777215),
			int64(2147483647), int64(4294967295), int64(math.MaxInt64), uint64(math.MaxUint64),
			"99999999999999999999999999999999999.999999999999999999999999999999", float32(1.5), float64(2.25),
			"2024-02-29", "838:59:59", time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC),
			time.Date(2038, 1, 19, 3, 14, 7, 999999000, time.UTC), int64(2155),
			"ab😀", "ü😀z", "text 😀", "\xe9\xff", "\x00\x01\x00\x00", "\x00\x00", "\x00\xff\x00", int64(3), int64(5), int64(513),
			`{"k": [1, "😀"]}`, int64(2147483648), int64(4294967294)},
	}
	minRow = typeRow{
		values: `(2, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
			'-99999999999999999999999999999999999.999999999999999999999999999999', -1.5, -2.25,
			'0000-00-00', '-838:59:59.000000', '1969-07-20 20:17:40.000001', '1970-01-01 00:00:01.000000', 1901,
			'', '', '', '', x'00000000', '', '', 'a', '', b'0', 'null')`,
		want: change.Row{int64(2), int64(-128), int64(0), int64(-32768), int64(0), int64(-8388608), int64(0),
			int64(-2147483648), int64(0), int64(math.MinInt64), int64(0),
			"-99999999999999999999999999999999999.999999999999999999999999999999", float32(-1.5), float64(-2.25),
			"0000-00-00", "-838:59:59", "1969-07-20 20:17:40.000001",
			time.Date(1970, 1, 1, 0, 0, 1, 0, time.UTC), int64(1901),
			"", "", "", "", "\x00\x00\x00\x00", "", "", int64(1), int64(0), int64(0),
			"null", int64(-2147483647), int64(-4294967296)},
	}
	// zeroRow holds zero datetimes, which go-mysql returns as strings.
	zeroRow = typeRow{
		values: `(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '2024-00-00', '00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', 0,
			'a', 'b', 'c', 'd', x'01', x'01', x'01', 'b', 'y', b'1', '[]')`,
		want: change.Row{int64(3), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0),
			"0.000000000000000000000000000000", float32(0), float64(0),
			"2024-00-00", "00:00:00", "0000-00-00 00:00:00.000000", "0000-00-00 00:00:00.000000", int64(0),
			"a", "b", "c", "d", "\x01\x00\x00\x00", "\x01", "\x01", int64(2), int64(2), int64(1),
			"[]", int64(1), int64(0)},
	}
)

func TestTypeMatrix(t *testing.T) {
	db := testenv.SharedMariaDB(t)
	n := testenv.Name(t)
	db.CreateDatabase(t, n)
	ddl := "CREATE TABLE `" + n + "`.types ("
	names := make([]string, len(typeCols))
	var plain []string // non-generated columns, in order
	for i, c := range typeCols {
		if i > 0 {
			ddl += ", "
		}
		ddl += "`" + c.name + "` " + c.ddl
		names[i] = c.name
		if c.name != "gv" && c.name != "gs" {
			plain = append(plain, "`"+c.name+"`")
		}
	}
	db.Exec(t, ddl+") ENGINE=InnoDB")
	cfg := Config{Addr: db.Addr(), User: "root", Flavor: "mariadb", ServerID: 5000 + readerIDs.Add(1), Database: n,
		Tables: []change.TableSpec{{Table: "types", Columns: names}}, Logger: quietLogger()}
	from, err := Head(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := startStream(t, cfg, from, false)

	ins := fmt.Sprintf("SET SESSION sql_mode = ''; SET SESSION time_zone = '+00:00'; INSERT INTO `%s`.types (%s) VALUES ", n, join(plain))
	rows := []typeRow{maxRow, minRow, zeroRow}
	for _, r := range rows {
		db.Exec(t, ins+r.values)
	}
	// A row of NULLs (generated columns follow i, so they are NULL too).
	db.Exec(t, fmt.Sprintf("INSERT INTO `%s`.types (id) VALUES (4)", n))
	nullRow := make(change.Row, len(typeCols))
	nullRow[0] = int64(4)

	for i, want := range []change.Row{maxRow.want, minRow.want, zeroRow.want, nullRow} {
		c := s.nextWithChanges(t).Changes[0]
		if c.Op != change.Insert || c.Before != nil {
			t.Fatalf("row %d: %v", i, c)
		}
		assertRow(t, fmt.Sprintf("insert %d", i), c.After, want)
	}

	// UPDATE: the changed names, generated columns included, and the
	// before image equal to what was inserted.
	db.Exec(t, fmt.Sprintf("SET SESSION sql_mode = ''; UPDATE `%s`.types SET i = 5, vc = 'x', bl = NULL, js = '{}' WHERE id = 1", n))
	c := s.nextWithChanges(t).Changes[0]
	assertRow(t, "update before", c.Before, maxRow.want)
	after := slices.Clone(maxRow.want)
	for name, v := range map[string]any{"i": int64(5), "vc": "x", "bl": nil, "js": "{}", "gv": int64(6), "gs": int64(10)} {
		after[slices.Index(names, name)] = v
	}
	assertRow(t, "update after", c.After, after)
	if got, want := c.Changed, []string{"i", "vc", "bl", "js", "gv", "gs"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
	// A column set to its own value is not listed; generated columns that
	// follow a changed one are.
	db.Exec(t, fmt.Sprintf("UPDATE `%s`.types SET i = 5, ti = ti, bn = bn WHERE id = 2", n))
	if c := s.nextWithChanges(t).Changes[0]; c.Op != change.Update || !reflect.DeepEqual(c.Changed, []string{"i", "gv", "gs"}) {
		t.Errorf("update of i on row 2: Changed = %v, want [i gv gs]", c.Changed)
	}

	// DELETE: the before image.
	db.Exec(t, fmt.Sprintf("DELETE FROM `%s`.types WHERE id = 3", n))
	c = s.nextWithChanges(t).Changes[0]
	if c.Op != change.Delete || c.After != nil {
		t.Fatalf("delete: %+v", c)
	}
	assertRow(t, "delete", c.Before, zeroRow.want)

	// Every decoded value can be an allow-listed notice value: the notice
	// is valid JSON and decodes (invalid UTF-8 becomes U+FFFD, a NaN null).
	for _, r := range []change.Row{maxRow.want, minRow.want, zeroRow.want, nullRow, {math.NaN(), float32(math.Inf(1))}} {
		vals := map[string]any{}
		for i, v := range r {
			vals["types."+names[i]] = v
		}
		m := notice.NewUserChanged("dialsync/test", "ds", time.Unix(0, 0), notice.UserChanged{
			UserID: 1, Tables: []string{"types"}, Operations: []string{"insert"}, Columns: names, Values: vals,
			Source: notice.SourcePosition{Txn: "0-1-1"}})
		if !json.Valid(m.Data) {
			t.Fatalf("notice with values of row %v is not valid JSON: %s", r[0], m.Data)
		}
		ev, err := notice.Decode(m.Data)
		if err != nil {
			t.Fatalf("decode notice: %v", err)
		}
		uc, err := ev.UserChanged()
		if err != nil || len(uc.Values) != len(vals) {
			t.Fatalf("values lost: %v, %d of %d", err, len(uc.Values), len(vals))
		}
	}
}

func assertRow(t *testing.T, what string, got, want change.Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("%s: column %s = %#v (%T), want %#v (%T)", what, typeCols[i].name, got[i], got[i], want[i], want[i])
		}
	}
}

func join(ss []string) string { return strings.Join(ss, ", ") }

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
