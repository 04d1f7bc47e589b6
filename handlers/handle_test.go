package handlers

import (
	"dialsync/change"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// Shorthands for building changes in the table below.
func row(v ...any) change.Row { return change.Row(v) }

func ins(table string, after change.Row) change.Change {
	return change.Change{Table: table, Op: change.Insert, After: after}
}

func upd(table string, before, after change.Row, changed ...string) change.Change {
	return change.Change{Table: table, Op: change.Update, Before: before, After: after, Changed: changed}
}

func del(table string, before change.Row) change.Change {
	return change.Change{Table: table, Op: change.Delete, Before: before}
}

// handleCase runs Changes in order into one Result, as the apply side does
// for a batch. A case whose last change fails checks that the failed change
// left the Result as the earlier changes made it.
type handleCase struct {
	name    string
	changes []change.Change
	// secrets are row values the error must not contain. Every non-nil
	// value of an erroring change whose text has 4+ characters is checked
	// as well; secrets covers shorter or derived forms.
	secrets []string
}

// The source schema ids are BIGINT UNSIGNED: canal gives int64, or uint64
// when the value does not fit int64 (or signedness metadata is present).
var handleCases = []handleCase{
	// users
	{name: "users insert", changes: []change.Change{ins("users", row(int64(1), nil))}},
	{name: "users update names the user once", changes: []change.Change{
		upd("users", row(int64(1), nil), row(int64(1), nil), "first_name", "updated_at")}},
	{name: "users update of current_user_address_id recomputes the user", changes: []change.Change{
		upd("users", row(int64(1), int64(10)), row(int64(1), int64(11)), "current_user_address_id", "updated_at")}},
	{name: "users soft delete is an update", changes: []change.Change{
		upd("users", row(int64(1), nil), row(int64(1), nil), "deleted_at", "updated_at")}},
	{name: "users hard delete", changes: []change.Change{del("users", row(int64(1), nil))}},
	{name: "users id change names both ids", changes: []change.Change{
		upd("users", row(int64(1), nil), row(int64(2), nil), "id")}},
	{name: "users id above MaxInt64 as uint64", changes: []change.Change{
		ins("users", row(uint64(math.MaxUint64), nil))}},
	{name: "users allow-listed extra columns are ignored", changes: []change.Change{
		upd("users", row(int64(1), nil, "Alice", "active"), row(int64(1), nil, "Alicia", "active"), "first_name")}},

	// user_addresses
	{name: "user_addresses insert", changes: []change.Change{
		ins("user_addresses", row(int64(9), int64(1)))}},
	{name: "user_addresses update of an address users point at", changes: []change.Change{
		upd("user_addresses", row(int64(9), int64(1)), row(int64(9), int64(1)), "post_code")}},
	{name: "user_addresses moves to another user", changes: []change.Change{
		upd("user_addresses", row(int64(9), int64(1)), row(int64(9), int64(2)), "user_id")}},
	{name: "user_addresses delete", changes: []change.Change{
		del("user_addresses", row(int64(9), int64(1)))}},

	// claims
	{name: "claims insert learns the owner", changes: []change.Change{
		ins("claims", row(int64(7), int64(1)))}},
	{name: "claims update same owner", changes: []change.Change{
		upd("claims", row(int64(7), int64(1)), row(int64(7), int64(1)), "status")}},
	{name: "claims moves between users", changes: []change.Change{
		upd("claims", row(int64(7), int64(1)), row(int64(7), int64(2)), "user_id")}},
	{name: "claims soft delete is an update", changes: []change.Change{
		upd("claims", row(int64(7), int64(1)), row(int64(7), int64(1)), "deleted_at", "updated_at")}},
	{name: "claims hard delete learns from the before image", changes: []change.Change{
		del("claims", row(int64(7), int64(1)))}},

	// claim_requirements
	{name: "claim_requirements insert", changes: []change.Change{
		ins("claim_requirements", row(int64(30), int64(7)))}},
	{name: "claim_requirements update", changes: []change.Change{
		upd("claim_requirements", row(int64(30), int64(7)), row(int64(30), int64(7)), "status")}},
	{name: "claim_requirements moves between claims", changes: []change.Change{
		upd("claim_requirements", row(int64(30), int64(7)), row(int64(30), int64(8)), "claim_id")}},
	{name: "claim_requirements delete", changes: []change.Change{
		del("claim_requirements", row(int64(30), int64(7)))}},
	{name: "requirement of a hard-deleted claim resolves by the learned owner", changes: []change.Change{
		del("claim_requirements", row(int64(30), int64(7))),
		del("claims", row(int64(7), int64(1))),
		del("claim_requirements", row(int64(31), int64(7)))}},
	{name: "claim_requirements NULL own id is not needed", changes: []change.Change{
		ins("claim_requirements", row(nil, int64(7)))}},

	// claim_vehicle_packages
	{name: "claim_vehicle_packages insert", changes: []change.Change{
		ins("claim_vehicle_packages", row(int64(40), int64(7)))}},
	{name: "claim_vehicle_packages update", changes: []change.Change{
		upd("claim_vehicle_packages", row(int64(40), int64(7)), row(int64(40), int64(8)), "claim_id")}},
	{name: "claim_vehicle_packages delete", changes: []change.Change{
		del("claim_vehicle_packages", row(int64(40), int64(7)))}},

	// integer kinds other than int64/uint64
	{name: "narrow integer kinds are accepted", changes: []change.Change{
		ins("users", row(int32(3), nil)),
		ins("users", row(uint32(4), nil)),
		ins("users", row(int(5), nil)),
		ins("users", row(uint(6), nil)),
		ins("users", row(int16(7), nil)),
		ins("users", row(uint16(8), nil)),
		ins("users", row(int8(9), nil)),
		ins("users", row(uint8(10), nil))}},

	// untracked tables
	{name: "unknown table is ignored", changes: []change.Change{
		ins("migrations", row("2024_01_01_000000_create_users_table", int64(1))),
		del("sessions", nil),
		ins("Users", row(int64(1)))}},
	{name: "unknown table with an unknown op is ignored", changes: []change.Change{
		{Table: "jobs", Op: 0}}},

	// poison rows
	{name: "error users NULL id", changes: []change.Change{ins("users", row(nil, nil))}},
	{name: "error users id as string", changes: []change.Change{
		ins("users", row("alice@example.com", nil))}},
	{name: "error users id as bytes", changes: []change.Change{
		ins("users", row([]byte("98765432"), nil))}, secrets: []string{"98765432"}},
	{name: "error users id as float", changes: []change.Change{ins("users", row(12345.5, nil))}},
	{name: "error users id as time", changes: []change.Change{
		ins("users", row(time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC), nil))}, secrets: []string{"2031"}},
	{name: "error users negative id", changes: []change.Change{ins("users", row(int64(-4242), nil))},
		secrets: []string{"4242"}},
	{name: "error claims NULL user_id in after image", changes: []change.Change{
		upd("claims", row(int64(7), int64(1)), row(int64(7), nil), "user_id")}},
	{name: "error claims NULL user_id in before image", changes: []change.Change{
		del("claims", row(int64(7777), nil))}},
	{name: "error claims user_id as string", changes: []change.Change{
		ins("claims", row(int64(7777), "07700900123"))}},
	{name: "error user_addresses NULL id", changes: []change.Change{
		ins("user_addresses", row(nil, int64(1234)))}},
	{name: "error claim_requirements claim_id as decimal string", changes: []change.Change{
		ins("claim_requirements", row(int64(3030), "1234.50"))}},
	{name: "error claim_vehicle_packages NULL claim_id", changes: []change.Change{
		del("claim_vehicle_packages", row(int64(4040), nil))}},
	{name: "error short row", changes: []change.Change{ins("claims", row(int64(7777)))}},
	{name: "error update without before image", changes: []change.Change{
		upd("users", nil, row(int64(1111), nil))}},
	{name: "error insert without after image", changes: []change.Change{ins("claims", nil)}},
	{name: "error delete without before image", changes: []change.Change{del("claim_requirements", nil)}},
	{name: "error unknown op", changes: []change.Change{{Table: "users", Op: 9, After: row(int64(1111), nil)}}},
	{name: "error leaves the result as the earlier changes made it", changes: []change.Change{
		ins("claims", row(int64(7), int64(1))),
		upd("claims", row(int64(8), int64(1)), row(int64(8), "B0BSECRET"), "user_id")}},
}

func TestHandleGolden(t *testing.T) {
	var out strings.Builder
	var r Result
	for _, tc := range handleCases {
		r.Reset()
		fmt.Fprintf(&out, "=== %s\n", tc.name)
		var err error
		for i := range tc.changes {
			c := &tc.changes[i]
			fmt.Fprintf(&out, "change: %s\n", describeChange(c))
			refs, learned := len(r.Refs), len(r.Learned)
			if err = Handle(c, &r); err != nil {
				if i != len(tc.changes)-1 {
					t.Fatalf("%s: change %d failed but is not the last: %v", tc.name, i, err)
				}
				checkError(t, tc, c, err)
				if len(r.Refs) != refs || len(r.Learned) != learned {
					t.Errorf("%s: failed Handle changed the result: refs %d -> %d, learned %d -> %d",
						tc.name, refs, len(r.Refs), learned, len(r.Learned))
				}
				break
			}
			if dups := duplicates(r.Refs[refs:]); dups != "" {
				t.Errorf("%s: change %d appended duplicate refs: %s", tc.name, i, dups)
			}
		}
		fmt.Fprintf(&out, "refs: %s\n", describeRefs(r.Refs))
		fmt.Fprintf(&out, "learned: %s\n", describeLearned(r.Learned))
		if len(r.Pointers) > 0 {
			fmt.Fprintf(&out, "pointers: %s\n", describePointers(r.Pointers))
		}
		if err != nil {
			fmt.Fprintf(&out, "error: %v\n", err)
		}
		if strings.HasPrefix(tc.name, "error ") != (err != nil) {
			t.Errorf("%s: error = %v; cases named \"error ...\" must fail, others must not", tc.name, err)
		}
	}
	golden(t, "handle.golden", out.String())
}

// checkError asserts err is a *RowError naming the table and never
// containing a row value.
func checkError(t *testing.T, tc handleCase, c *change.Change, err error) {
	t.Helper()
	var re *RowError
	if !errors.As(err, &re) {
		t.Errorf("%s: error %T is not a *RowError: %v", tc.name, err, err)
	} else if re.Table != c.Table {
		t.Errorf("%s: error names table %q, want %q", tc.name, re.Table, c.Table)
	}
	msg := err.Error()
	if !strings.Contains(msg, c.Table) {
		t.Errorf("%s: error %q does not name the table", tc.name, msg)
	}
	secrets := append([]string(nil), tc.secrets...)
	for _, img := range []change.Row{c.Before, c.After} {
		for _, v := range img {
			if v == nil {
				continue
			}
			if s := fmt.Sprint(v); len(s) >= 4 {
				secrets = append(secrets, s)
			}
		}
	}
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Errorf("%s: error %q leaks a row value %q", tc.name, msg, s)
		}
	}
}

func duplicates(refs []Ref) string {
	seen := map[Ref]bool{}
	var d []string
	for _, r := range refs {
		if seen[r] {
			d = append(d, describeRefs([]Ref{r}))
		}
		seen[r] = true
	}
	return strings.Join(d, " ")
}

func describeChange(c *change.Change) string {
	s := c.Table + " " + c.Op.String()
	if c.Before != nil {
		s += " before=" + describeRow(c.Before)
	}
	if c.After != nil {
		s += " after=" + describeRow(c.After)
	}
	if len(c.Changed) > 0 {
		s += " changed=" + strings.Join(c.Changed, ",")
	}
	return s
}

// describeRow prints each value with its Go type, since the type is what
// Handle judges.
func describeRow(r change.Row) string {
	parts := make([]string, len(r))
	for i, v := range r {
		switch v := v.(type) {
		case nil:
			parts[i] = "NULL"
		case []byte:
			parts[i] = fmt.Sprintf("%q:[]byte", v)
		case string:
			parts[i] = fmt.Sprintf("%q:string", v)
		case time.Time:
			parts[i] = v.Format(time.RFC3339) + ":time.Time"
		default:
			parts[i] = fmt.Sprintf("%v:%T", v, v)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func describeRefs(refs []Ref) string {
	if len(refs) == 0 {
		return "-"
	}
	parts := make([]string, len(refs))
	for i, r := range refs {
		kind := map[RefKind]string{User: "user", Claim: "claim", Address: "address"}[r.Kind]
		if kind == "" {
			kind = fmt.Sprintf("kind%d", r.Kind)
		}
		parts[i] = fmt.Sprintf("%s:%d", kind, r.ID)
	}
	return strings.Join(parts, " ")
}

func describePointers(ps []Pointer) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("user %d -> address %d", p.User, p.Address)
	}
	return strings.Join(parts, ", ")
}

func describeLearned(owners []Owner) string {
	if len(owners) == 0 {
		return "-"
	}
	parts := make([]string, len(owners))
	for i, o := range owners {
		parts[i] = fmt.Sprintf("claim:%d->user:%d", o.Claim, o.User)
	}
	return strings.Join(parts, " ")
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatalf("update golden: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the output (run `go test ./handlers -run %s -update` and review the diff):\n%s",
			path, t.Name(), lineDiff(string(want), got))
	}
}

// lineDiff lists the lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

func TestIsTracked(t *testing.T) {
	for _, table := range []string{"users", "user_addresses", "claims", "claim_requirements", "claim_vehicle_packages"} {
		if !IsTracked(table) {
			t.Errorf("IsTracked(%q) = false", table)
		}
	}
	for _, table := range []string{"", "Users", "migrations", "users ", "claim", "dialsync.users"} {
		if IsTracked(table) {
			t.Errorf("IsTracked(%q) = true", table)
		}
	}
}

func TestSpecs(t *testing.T) {
	got := describeSpecs(Specs())
	want := "users(id,current_user_address_id) user_addresses(id,user_id) claims(id,user_id) " +
		"claim_requirements(id,claim_id) claim_vehicle_packages(id,claim_id)"
	if got != want {
		t.Errorf("Specs() = %s\nwant %s", got, want)
	}
	for _, s := range Specs() {
		if !IsTracked(s.Table) {
			t.Errorf("Specs lists %q but IsTracked says no", s.Table)
		}
	}
}

func TestSpecsWith(t *testing.T) {
	extra := map[string][]string{
		"users":      {"status", "id", "is_enabled", "status"}, // own id and a repeat dropped
		"claims":     {"user_id", "status", "lender"},          // own user_id dropped
		"migrations": {"batch"},                                // untracked: ignored
	}
	specs := SpecsWith(extra)
	got := describeSpecs(specs)
	want := "users(id,current_user_address_id,status,is_enabled) user_addresses(id,user_id) claims(id,user_id,status,lender) " +
		"claim_requirements(id,claim_id) claim_vehicle_packages(id,claim_id)"
	if got != want {
		t.Errorf("SpecsWith() = %s\nwant %s", got, want)
	}
	if i := ColumnIndex(specs[0], "is_enabled"); i != 3 {
		t.Errorf("ColumnIndex(users, is_enabled) = %d, want 3", i)
	}
	if i := ColumnIndex(specs[2], "user_id"); i != colParent {
		t.Errorf("ColumnIndex(claims, user_id) = %d, want %d (shared with the handler)", i, colParent)
	}
	if i := ColumnIndex(specs[1], "post_code"); i != -1 {
		t.Errorf("ColumnIndex(user_addresses, post_code) = %d, want -1", i)
	}
	// The result must not alias the package's own column lists.
	specs[0].Columns[0] = "clobbered"
	if Specs()[0].Columns[0] != "id" {
		t.Error("modifying a returned spec changed the package's columns")
	}
	if len(extra["users"]) != 4 {
		t.Error("SpecsWith modified its argument")
	}
}

func describeSpecs(specs []change.TableSpec) string {
	parts := make([]string, len(specs))
	for i, s := range specs {
		parts[i] = s.Table + "(" + strings.Join(s.Columns, ",") + ")"
	}
	return strings.Join(parts, " ")
}

// benchChanges is a plausible mix for one batch: mostly requirement and
// claim updates, some users and addresses, and rows of an ignored table.
var benchChanges = []change.Change{
	upd("claim_requirements", row(int64(30), int64(7), "PENDING"), row(int64(30), int64(7), "DONE"), "status"),
	ins("claim_requirements", row(int64(31), int64(7))),
	upd("claims", row(int64(7), int64(1)), row(int64(7), int64(2)), "user_id"),
	upd("users", row(int64(1), int64(5)), row(int64(1), int64(5)), "phone_number"),
	upd("user_addresses", row(int64(9), int64(1)), row(int64(9), int64(1)), "post_code"),
	del("claim_vehicle_packages", row(int64(40), uint64(7))),
	ins("jobs", row(int64(1), "payload")),
}

func TestHandleDoesNotAllocate(t *testing.T) {
	var r Result
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset()
		for i := range benchChanges {
			if err := Handle(&benchChanges[i], &r); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Handle allocated %.1f times per batch with a reused Result, want 0", allocs)
	}
}

func BenchmarkHandle(b *testing.B) {
	var r Result
	b.ReportAllocs()
	for b.Loop() {
		r.Reset()
		for i := range benchChanges {
			if err := Handle(&benchChanges[i], &r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(benchChanges)), "ns/change")
}
