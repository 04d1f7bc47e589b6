package canal

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseStartGTID feeds checkpoint GTID texts (as an operator or a
// damaged row could hold them) to the start-position parser of both
// flavors. It must never panic; a failure must be fatal (no retry can mend
// a checkpoint) and one line; a success must round-trip through String, so
// a stored End.GTIDSet always parses back to the same set.
func FuzzParseStartGTID(f *testing.F) {
	for _, s := range []string{
		"", "0-1-42", "0-1-42,1-2-7", "garbage!", "0-1", "-1-1", "0-1-18446744073709551616", "4294967296-1-1",
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9,4e11fa47-71ca-11e1-9e33-c80aa9429562:1",
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:5-1", "3e11fa47-71ca-11e1-9e33-c80aa9429562", "not-a-uuid:1", "0-1-1\n0-2-2", ",,", " 0-1-1 ",
	} {
		f.Add("mariadb", s)
		f.Add("mysql", s)
	}
	f.Fuzz(func(t *testing.T, flavor, text string) {
		if flavor != "mysql" {
			flavor = "mariadb"
		}
		set, err := parseStartGTID(flavor, text)
		if err != nil {
			if !errors.Is(err, ErrFatal) {
				t.Fatalf("%s %q: error is not fatal: %v", flavor, text, err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("%s %q: error spans lines: %q", flavor, text, err)
			}
			return
		}
		if text == "" {
			if set != nil {
				t.Fatalf("empty text gave set %v", set)
			}
			return
		}
		again, err := parseStartGTID(flavor, set.String())
		if err != nil {
			t.Fatalf("%s %q: String() %q does not parse back: %v", flavor, text, set.String(), err)
		}
		if again.String() != set.String() {
			t.Fatalf("%s %q: round trip %q -> %q", flavor, text, set.String(), again.String())
		}
	})
}
