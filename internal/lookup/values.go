package lookup

import (
	"dialsync/internal/queue"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Reading the rule's values.

func parseRow(vals []any, idx [4]int) (queue.Row, error) {
	var r queue.Row
	var err error
	if r.UserID, err = toUint(vals[idx[0]]); err != nil {
		return r, fmt.Errorf("user_id: %w", err)
	}
	if r.OpenClaims, err = toInt(vals[idx[1]]); err != nil {
		return r, fmt.Errorf("open_claims of user %d: %w", r.UserID, err)
	}
	if r.PendingRequirements, err = toInt(vals[idx[2]]); err != nil {
		return r, fmt.Errorf("pending_requirements of user %d: %w", r.UserID, err)
	}
	if r.OldestPendingAt, err = toTime(vals[idx[3]]); err != nil {
		return r, fmt.Errorf("oldest_pending_at of user %d: %w", r.UserID, err)
	}
	return r, nil
}

// The go-mysql text protocol yields int64/uint64 for integer columns,
// float64 for FLOAT/DOUBLE, and []byte for everything else (DECIMAL from
// SUM, dates, strings); see mysql/rowdata.go ParseText.
func toUint(v any) (uint64, error) {
	switch x := v.(type) {
	case uint64:
		return x, nil
	case int64:
		if x < 0 {
			return 0, fmt.Errorf("negative value %d", x)
		}
		return uint64(x), nil
	case []byte:
		return strconv.ParseUint(string(x), 10, 64)
	case string:
		return strconv.ParseUint(x, 10, 64)
	case nil:
		return 0, errors.New("is NULL")
	}
	return 0, fmt.Errorf("unsupported type %T", v)
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case uint64:
		if x > 1<<63-1 {
			return 0, fmt.Errorf("value %d out of range", x)
		}
		return int64(x), nil
	case float64:
		return int64(x), nil
	case []byte:
		return parseIntText(string(x))
	case string:
		return parseIntText(x)
	case nil:
		return 0, nil // a rule may give NULL counts (e.g. SUM over nothing): zero
	}
	return 0, fmt.Errorf("unsupported type %T", v)
}

// parseIntText accepts "3" and the DECIMAL "3.00" a SUM may give.
func parseIntText(s string) (int64, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) {
		return 0, fmt.Errorf("not an integer: %q", s)
	}
	return int64(f), nil
}

// timeLayouts: MySQL renders DATETIME/TIMESTAMP as "YYYY-MM-DD hh:mm:ss"
// with up to 6 fractional digits, and DATE as "YYYY-MM-DD".
var timeLayouts = []string{"2006-01-02 15:04:05.999999", "2006-01-02"}

func toTime(v any) (*time.Time, error) {
	var s string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case time.Time:
		t := x.UTC()
		return &t, nil
	case []byte:
		s = string(x)
	case string:
		s = x
	default:
		return nil, fmt.Errorf("unsupported type %T", v)
	}
	if strings.HasPrefix(s, "0000-00-00") {
		return nil, nil // MySQL's zero date means "no time"
	}
	for _, layout := range timeLayouts {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return &t, nil
		}
	}
	return nil, fmt.Errorf("cannot parse time %q", s)
}
