package notice

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// reference encodes with encoding/json, the definition the hand-written
// encoder must match byte for byte.
func reference(t testing.TB, id, source, typ, subject string, tm time.Time, data any) []byte {
	t.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(Event{SpecVersion: "1.0", ID: id, Source: source, Type: typ, Subject: subject,
		Time: tm.UTC(), DataContentType: "application/json", DataSchema: DataSchema, Data: raw})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// awkward strings: escapes, HTML characters, control bytes, unicode, line
// separators and invalid UTF-8, which encoding/json all rewrites.
var awkward = []string{
	"plain", "", `quo"te`, `back\slash`, "tab\tnew\nline\r", "<b>&amp;</b>", "\x00\x01\x1f\x7f",
	"ünïcødé ✓ 日本", "emoji 😀", "sep\u2028par\u2029", "bad\xffutf8\xc3", "slash/ok",
}

func TestUserChangedMatchesEncodingJSON(t *testing.T) {
	tm := time.Date(2024, 5, 6, 7, 8, 9, 120000000, time.FixedZone("x", 3600))
	cases := []UserChanged{
		{UserID: 1, Tables: []string{"users"}, Operations: []string{"update"}, Columns: []string{"email", "status"},
			Source: SourcePosition{File: "mysql-bin.000003", Pos: 4711, GTID: "0-1-42", Txn: "0-1-42"}},
		{UserID: 18446744073709551615, Tables: []string{}, Operations: []string{}, Columns: []string{},
			Source: SourcePosition{Txn: "mysql-bin.000001:4"}},
		{UserID: 7, Tables: awkward, Operations: awkward, Columns: awkward,
			Values: map[string]any{"status": "active", "n": int64(-3), "u": uint64(1 << 63), "nil": nil,
				"weird<&>": "ü\"\n", "when": time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)},
			Source: SourcePosition{File: "f\"ile", Pos: 1, GTID: "3E11FA47-71CA-11E1-9E33-C80AA9429562:23", Txn: "tx<1>"}},
	}
	for i, d := range cases {
		for _, source := range awkward[:6] {
			m := NewUserChanged(source, "dialsync", tm, d)
			user := strings.TrimPrefix(m.Subject, "dialsync.user.")
			want := reference(t, m.ID, source, TypeUserChanged, user, tm, d)
			if !bytes.Equal(m.Data, want) {
				t.Fatalf("case %d source %q:\n got %s\nwant %s", i, source, m.Data, want)
			}
			// And the round trip through the public decoder.
			e, err := Decode(m.Data)
			if err != nil {
				t.Fatalf("case %d: decode: %v", i, err)
			}
			got, err := e.UserChanged()
			if err != nil {
				t.Fatal(err)
			}
			var back UserChanged
			raw, _ := json.Marshal(d)
			_ = json.Unmarshal(raw, &back)
			if !reflect.DeepEqual(got, back) {
				t.Fatalf("case %d: round trip\n got %#v\nwant %#v", i, got, back)
			}
			if !e.Time.Equal(tm) || e.Source != source || e.ID != m.ID {
				t.Fatalf("case %d: envelope %+v", i, e)
			}
		}
	}
}

func TestUserChangedIDsAndSubjects(t *testing.T) {
	tm := time.Unix(1700000000, 0)
	m := NewUserChanged("dialsync/main", "ds", tm, UserChanged{UserID: 42, Source: SourcePosition{Txn: "0-1-9"}})
	if m.ID != "0-1-9/user.changed/42" || m.Subject != "ds.user.42" {
		t.Fatalf("id %q subject %q", m.ID, m.Subject)
	}
	// Nil slices are arrays, never null (the schema says array).
	if !bytes.Contains(m.Data, []byte(`"tables":[],"operations":[],"columns":[]`)) {
		t.Fatalf("nil slices not encoded as []: %s", m.Data)
	}
	// A txn with spaces or control bytes still gives a header-safe id, and
	// the same one every time.
	d := UserChanged{UserID: 1, Source: SourcePosition{Txn: "bin log.000001:4\r\n"}}
	a, b := NewUserChanged("s", "p", tm, d), NewUserChanged("s", "p", tm, d)
	if a.ID != b.ID || strings.ContainsAny(a.ID, " \r\n\t") {
		t.Fatalf("unsafe or unstable id %q / %q", a.ID, b.ID)
	}
	if a.ID != "bin_log.000001:4__/user.changed/1" {
		t.Fatalf("id %q", a.ID)
	}
}

func TestQueueChangedMatchesEncodingJSON(t *testing.T) {
	tm := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	oldest := time.Date(2023, 12, 31, 23, 59, 59, 999999999, time.FixedZone("y", -7200))
	cases := []QueueChanged{
		{UserID: 5, OpenClaims: 2, PendingRequirements: 3, OldestPendingAt: &oldest, Source: SourcePosition{Txn: "0-1-1", GTID: "0-1-1"}},
		{UserID: 6, OpenClaims: -1, PendingRequirements: 0, Source: SourcePosition{Txn: "bin.1:5", File: "bin.1", Pos: 5}},
	}
	for _, kind := range []string{KindEntered, KindLeft, KindUpdated} {
		for i, d := range cases {
			m := NewQueueChanged("dialsync/main", "dialsync", kind, tm, d)
			user := strings.TrimPrefix(m.Subject, "dialsync.queue.")
			wantID := d.Source.Txn + "/queue." + kind + "/" + user
			if m.ID != wantID {
				t.Fatalf("id %q want %q", m.ID, wantID)
			}
			// Times are always emitted in UTC (the instant is what matters).
			ref := d
			if d.OldestPendingAt != nil {
				u := d.OldestPendingAt.UTC()
				ref.OldestPendingAt = &u
			}
			want := reference(t, m.ID, "dialsync/main", "dialsync.queue."+kind, user, tm, ref)
			if !bytes.Equal(m.Data, want) {
				t.Fatalf("%s case %d:\n got %s\nwant %s", kind, i, m.Data, want)
			}
			e, err := Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if e.QueueKind() != kind {
				t.Fatalf("kind %q want %q", e.QueueKind(), kind)
			}
			got, err := e.QueueChanged()
			if err != nil {
				t.Fatal(err)
			}
			if got.UserID != d.UserID || got.OpenClaims != d.OpenClaims || got.Source != d.Source ||
				(d.OldestPendingAt == nil) != (got.OldestPendingAt == nil) ||
				(d.OldestPendingAt != nil && !got.OldestPendingAt.Equal(*d.OldestPendingAt)) {
				t.Fatalf("round trip %+v want %+v", got, d)
			}
			if _, err := e.UserChanged(); !errors.Is(err, ErrWrongType) {
				t.Fatalf("UserChanged on queue notice: %v", err)
			}
		}
	}
}

func TestOtherTypes(t *testing.T) {
	tm := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	rc := ReconcileCompleted{RunID: "2024-01-01T00:00:00Z", Reason: "periodic", StartedAt: tm, FinishedAt: tm.Add(time.Second),
		Users: 50000, Queued: 1234, Entered: 1, Left: 2, Updated: 3, Source: SourcePosition{Txn: "0-1-5"}}
	m, err := NewReconcileCompleted("dialsync/main", "dialsync", tm, rc)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "dialsync.reconcile" || m.ID != "reconcile/2024-01-01T00:00:00Z" {
		t.Fatalf("subject %q id %q", m.Subject, m.ID)
	}
	e, err := Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.ReconcileCompleted()
	if err != nil || !reflect.DeepEqual(got, rc) {
		t.Fatalf("reconcile round trip %+v %v", got, err)
	}

	dl := DeadLetter{Table: "claims", Operation: "update", Seq: 3, Error: "boom", UserIDs: []uint64{9}, Source: SourcePosition{Txn: "0-1-6"}}
	m, err = NewDeadLetter("dialsync/main", "dialsync", tm, dl)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "dialsync.deadletter" || m.ID != "0-1-6/deadletter/claims/3" {
		t.Fatalf("subject %q id %q", m.Subject, m.ID)
	}
	e, err = Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	gotDL, err := e.DeadLetter()
	if err != nil || !reflect.DeepEqual(gotDL, dl) {
		t.Fatalf("dead letter round trip %+v %v", gotDL, err)
	}
}

func TestDecodeForwardCompatible(t *testing.T) {
	// A v1 notice from a newer dialsync with fields this version lacks.
	in := `{"specversion":"1.0","id":"x/user.changed/1","source":"dialsync/main","type":"dialsync.user.changed",
	"subject":"1","time":"2024-01-01T00:00:00Z","datacontenttype":"application/json","dataschema":"urn:dialsync:notice:v1",
	"newenvelopefield":{"a":1},
	"data":{"user_id":1,"tables":["users"],"operations":["update"],"columns":["email"],"brand_new":[1,2],"source":{"txn":"x","later":true}}}`
	e, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.UserChanged()
	if err != nil {
		t.Fatal(err)
	}
	if d.UserID != 1 || d.Columns[0] != "email" || d.Source.Txn != "x" {
		t.Fatalf("decoded %+v", d)
	}

	// A breaking version is refused by the typed accessor, not misread.
	e.DataSchema = "urn:dialsync:notice:v2"
	if _, err := e.UserChanged(); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("v2: %v", err)
	}
	for _, bad := range []string{`{`, `{"specversion":"0.3","id":"a","type":"t"}`, `{"specversion":"1.0","type":"t"}`, `{"specversion":"1.0","id":"a"}`} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Fatalf("Decode(%s) succeeded", bad)
		}
	}
}

func TestAppendValuesRejectsNaNAsNull(t *testing.T) {
	m := NewUserChanged("s", "p", time.Unix(0, 0), UserChanged{UserID: 1, Source: SourcePosition{Txn: "t"},
		Values: map[string]any{"ok": "v", "bad": nanValue()}})
	e, err := Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := e.UserChanged()
	if d.Values["ok"] != "v" || d.Values["bad"] != nil {
		t.Fatalf("values %+v", d.Values)
	}
}

func nanValue() float64 { z := 0.0; return z / z }

func BenchmarkNewUserChanged(b *testing.B) {
	d := UserChanged{UserID: 123456, Tables: []string{"claim_requirements", "claims"}, Operations: []string{"update"},
		Columns: []string{"status", "updated_at"}, Source: SourcePosition{File: "mysql-bin.000042", Pos: 123456789, GTID: "0-1-987654", Txn: "0-1-987654"}}
	tm := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		_ = NewUserChanged("dialsync/main", "dialsync", tm, d)
	}
}

func BenchmarkEncodingJSONUserChanged(b *testing.B) {
	d := UserChanged{UserID: 123456, Tables: []string{"claim_requirements", "claims"}, Operations: []string{"update"},
		Columns: []string{"status", "updated_at"}, Source: SourcePosition{File: "mysql-bin.000042", Pos: 123456789, GTID: "0-1-987654", Txn: "0-1-987654"}}
	tm := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		_ = reference(b, "0-1-987654/user.changed/123456", "dialsync/main", TypeUserChanged, "123456", tm, d)
	}
}

// FuzzEncodingMatchesEncodingJSON checks the hand-written encoders against
// encoding/json for arbitrary strings (go test -fuzz=FuzzEncoding ./notice).
func FuzzEncodingMatchesEncodingJSON(f *testing.F) {
	for _, s := range awkward {
		f.Add(s, s, s, uint64(len(s)), int64(len(s))-3)
	}
	f.Fuzz(func(t *testing.T, table, source, txn string, user uint64, n int64) {
		tm := time.Unix(int64(user%4102444800), n%1e9).UTC()
		d := UserChanged{UserID: user, Tables: []string{table}, Operations: []string{"update"}, Columns: []string{table, txn},
			Source: SourcePosition{File: table, Pos: uint32(user), GTID: txn, Txn: txn}}
		m := NewUserChanged(source, "p", tm, d)
		if want := reference(t, m.ID, source, TypeUserChanged, strings.TrimPrefix(m.Subject, "p.user."), tm, d); !bytes.Equal(m.Data, want) {
			t.Fatalf("user.changed:\n got %s\nwant %s", m.Data, want)
		}
		q := QueueChanged{UserID: user, OpenClaims: n, PendingRequirements: -n, OldestPendingAt: &tm, Source: d.Source}
		m = NewQueueChanged(source, "p", KindUpdated, tm, q)
		if want := reference(t, m.ID, source, TypeQueueUpdated, strings.TrimPrefix(m.Subject, "p.queue."), tm, q); !bytes.Equal(m.Data, want) {
			t.Fatalf("queue.updated:\n got %s\nwant %s", m.Data, want)
		}
		if strings.ContainsAny(m.ID, " \t\r\n") {
			t.Fatalf("id %q not header-safe", m.ID)
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"a","type":"dialsync.user.changed","data":{"user_id":1}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"a","type":"dialsync.queue.left","data":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		// Accessors never panic, whatever the data.
		_, _ = e.UserChanged()
		_, _ = e.QueueChanged()
		_, _ = e.ReconcileCompleted()
		_, _ = e.DeadLetter()
	})
}
