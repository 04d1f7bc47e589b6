package lookup

import "testing"

func TestBytesBehind(t *testing.T) {
	logs := []BinaryLog{{"b.000001", 1000}, {"b.000002", 500}, {"b.000003", 200}}
	cases := []struct {
		file   string
		pos    uint32
		behind uint64
		ok     bool
	}{
		{"b.000003", 200, 0, true},
		{"b.000003", 150, 50, true},
		{"b.000002", 100, 400 + 200, true},
		{"b.000001", 4, 996 + 500 + 200, true},
		{"b.000000", 4, 0, false},
	}
	for _, c := range cases {
		got, ok := BytesBehind(logs, c.file, c.pos)
		if got != c.behind || ok != c.ok {
			t.Errorf("BytesBehind(%s, %d) = %d, %v; want %d, %v", c.file, c.pos, got, ok, c.behind, c.ok)
		}
	}
}
