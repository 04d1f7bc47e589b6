package handlers

import (
	"dialsync/change"
	"errors"
	"strings"
	"testing"
)

// fuzzTables covers every tracked table plus untracked names.
var fuzzTables = []string{
	TableUsers, TableUserAddresses, TableClaims, TableClaimRequirements, TableClaimVehiclePackages,
	"migrations", "",
}

// leakMark wraps every string the fuzzer puts in a row, so a leaked string
// value is found by an exact search in the error text.
const leakMark = "PII<"

// fuzzValue builds one column value of kind k (3 bits) from the fuzz inputs.
// alt picks a different value of the same kind and sign, to check that the
// error text does not depend on the value.
func fuzzValue(k uint32, a int64, b uint64, s string, alt bool) any {
	if alt {
		a ^= 0x2a // low bits only: the sign is kept
		b ^= 0x2a
		s += "~alt"
	}
	switch k & 7 {
	case 0:
		return nil
	case 1:
		return a
	case 2:
		return b
	case 3:
		return leakMark + s + ">"
	case 4:
		return float64(a) + 0.5
	case 5:
		return int32(a)
	case 6:
		return []byte(leakMark + s + ">")
	default:
		return int8(a)
	}
}

// fuzzRow builds a row image from 8 bits of shape: bit 0 says whether the
// image exists, bits 1-2 its length (0-3), then one 3-bit kind per column
// (the third column, if any, takes the first column's kind plus one).
func fuzzRow(shape uint32, a int64, b uint64, s string, alt bool) change.Row {
	if shape&1 == 0 {
		return nil
	}
	n := int(shape>>1) & 3
	r := make(change.Row, n)
	for i := range r {
		r[i] = fuzzValue(shape>>(3+3*(i%2))+uint32(i/2), a+int64(i), b+uint64(i), s, alt)
	}
	return r
}

func fuzzChange(table, op uint8, shape uint32, a int64, b uint64, s string, alt bool) change.Change {
	return change.Change{
		Table:  fuzzTables[int(table)%len(fuzzTables)],
		Op:     change.Op(op % 5), // 0 and 4 are invalid ops
		Before: fuzzRow(shape&0xffff, a, b, s, alt),
		After:  fuzzRow(shape>>16, a, b, s, alt),
	}
}

// FuzzHandle checks that Handle never panics, that its errors are
// *RowErrors whose text does not depend on (so cannot contain) the row
// values, that a failed call leaves the Result alone, and that a successful
// one appends no duplicate refs and learns exactly one owner per claims row.
func FuzzHandle(f *testing.F) {
	f.Add(uint8(2), uint8(2), uint32(0x00070007), int64(7), uint64(1), "x")
	f.Add(uint8(0), uint8(1), uint32(0x00070000), int64(-1), uint64(0), "")
	f.Add(uint8(4), uint8(3), uint32(0x00000057), int64(1<<40), uint64(1<<63), "07700900123")
	f.Fuzz(func(t *testing.T, table, op uint8, shape uint32, a int64, b uint64, s string) {
		c := fuzzChange(table, op, shape, a, b, s, false)
		// A non-empty Result, as in a batch, to check it is appended to
		// and restored on error.
		r := Result{Refs: []Ref{{User, 1}}, Learned: []Owner{{2, 3}}}
		err := Handle(&c, &r)

		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, leakMark) {
				t.Fatalf("error leaks a string value: %q", msg)
			}
			var re *RowError
			if !errors.As(err, &re) || re.Table != c.Table {
				t.Fatalf("error %T %q is not a *RowError for table %q", err, msg, c.Table)
			}
			alt := fuzzChange(table, op, shape, a, b, s, true)
			if err2 := Handle(&alt, &Result{}); err2 == nil || err2.Error() != msg {
				t.Fatalf("error text depends on row values: %q vs %v", msg, err2)
			}
			if len(r.Refs) != 1 || len(r.Learned) != 1 {
				t.Fatalf("failed Handle changed the result: %d refs, %d learned", len(r.Refs), len(r.Learned))
			}
			return
		}
		added := r.Refs[1:]
		if !IsTracked(c.Table) && (len(added) != 0 || len(r.Learned) != 1) {
			t.Fatalf("untracked table %q produced refs", c.Table)
		}
		if IsTracked(c.Table) && len(added) == 0 {
			t.Fatalf("tracked change of %q produced no refs", c.Table)
		}
		if d := duplicates(added); d != "" {
			t.Fatalf("duplicate refs within one change: %s", d)
		}
		wantLearned := 1
		if c.Table == TableClaims {
			wantLearned = 2
		}
		if len(r.Learned) != wantLearned {
			t.Fatalf("learned %d owners, want %d", len(r.Learned)-1, wantLearned-1)
		}
	})
}
