package canal

import (
	"bytes"
	"dialsync/change"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/schema"
)

// pick copies the wanted columns of a decoded row into a Row. pad[j] > 0
// restores the trailing 0x00 bytes of a BINARY(pad[j]) value: the server
// strips them in the binlog (fixed-length strings are logged without their
// padding) and go-mysql does not put them back, while a SELECT returns the
// value padded (https://dev.mysql.com/doc/refman/8.0/en/binary-varbinary.html).
func pick(row []any, idx, pad []int) change.Row {
	out := make(change.Row, len(idx))
	for j, i := range idx {
		v := normalize(row[i])
		if s, ok := v.(string); ok && pad != nil && len(s) < pad[j] {
			v = s + strings.Repeat("\x00", pad[j]-len(s))
		}
		out[j] = v
	}
	return out
}

// binaryLen is N for a BINARY(N) column type, else 0.
func binaryLen(rawType string) int {
	rest, ok := strings.CutPrefix(strings.ToLower(rawType), "binary(")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSuffix(rest, ")"))
	if err != nil {
		return 0
	}
	return n
}

// normalize gives a value the form Row documents. go-mysql returns strings
// and blobs that point into the event buffer (utils.ByteSliceToString and
// sub-slices in replication/row_event.go); they are copied so a kept value
// does not pin a whole event.
func normalize(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case int:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return x
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x)
		}
		return uint64(x)
	case string:
		return strings.Clone(x)
	case []byte:
		return string(x)
	case time.Time:
		// TIMESTAMP values come back in the process's local zone
		// (time.Unix in decodeTimestamp2).
		return x.UTC()
	}
	return v
}

// changedColumns names the columns whose values differ between the before
// and after image of an update (both have len(t.Columns) values).
func changedColumns(t *schema.Table, before, after []any) []string {
	var names []string
	for i := range before {
		if !valueEqual(before[i], after[i]) {
			names = append(names, t.Columns[i].Name)
		}
	}
	return names
}

// valueEqual compares two raw decoded values of the same column. The types
// go-mysql produces are comparable with == except []byte; time.Time is
// compared as an instant. Anything else falls back to reflect.DeepEqual.
func valueEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	case string:
		y, ok := b.(string)
		return ok && x == y
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64, uint, float32, float64, bool:
		return a == b
	}
	return reflect.DeepEqual(a, b)
}

// changeSize approximates the memory a Change holds, for MaxTxnBytes.
func changeSize(c *change.Change) int {
	n := 64 + 16*len(c.Changed)
	for _, r := range [2]change.Row{c.Before, c.After} {
		n += 24
		for _, v := range r {
			n += 16
			if s, ok := v.(string); ok {
				n += len(s)
			}
		}
	}
	return n
}
