package notice

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// The JSON Schemas in ../schemas describe the wire format; this test checks
// that what the encoders produce validates against them, with a minimal
// draft 2020-12 validator for the keywords the schemas use. Any other
// keyword fails the test, so the validator never silently ignores a rule.

const schemaDir = "../schemas"

func loadSchemas(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.schema.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas in %s: %v", schemaDir, err)
	}
	out := map[string]map[string]any{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var s map[string]any
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if s["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Fatalf("%s: $schema is %v", f, s["$schema"])
		}
		typ := strings.TrimSuffix(filepath.Base(f), ".schema.json")
		out[typ] = s
	}
	return out
}

// validator checks a value against a schema. strict additionally reports
// object members the schema does not declare: not a schema rule (consumers
// must accept unknown members), but it keeps the schemas complete.
type validator struct {
	root   map[string]any
	strict bool
	errs   []string
}

func (v *validator) fail(path, format string, args ...any) {
	v.errs = append(v.errs, path+": "+fmt.Sprintf(format, args...))
}

func (v *validator) validate(s map[string]any, x any, path string) {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rule := s[k]
		switch k {
		case "$schema", "$id", "title", "description", "$defs":
		case "$ref":
			ref, _ := rule.(string)
			name, ok := strings.CutPrefix(ref, "#/$defs/")
			def, _ := v.root["$defs"].(map[string]any)[name].(map[string]any)
			if !ok || def == nil {
				v.fail(path, "unresolvable $ref %q", ref)
				continue
			}
			v.validate(def, x, path)
		case "type":
			var types []string
			switch r := rule.(type) {
			case string:
				types = []string{r}
			case []any:
				for _, t := range r {
					types = append(types, t.(string))
				}
			}
			ok := false
			for _, t := range types {
				ok = ok || hasType(x, t)
			}
			if !ok {
				v.fail(path, "%s is not of type %v", show(x), types)
			}
		case "const":
			if !sameJSON(rule, x) {
				v.fail(path, "%s is not the const %s", show(x), show(rule))
			}
		case "enum":
			ok := false
			for _, e := range rule.([]any) {
				ok = ok || sameJSON(e, x)
			}
			if !ok {
				v.fail(path, "%s not in enum %s", show(x), show(rule))
			}
		case "required":
			if obj, ok := x.(map[string]any); ok {
				for _, r := range rule.([]any) {
					if _, has := obj[r.(string)]; !has {
						v.fail(path, "missing required %q", r)
					}
				}
			}
		case "properties":
			obj, ok := x.(map[string]any)
			if !ok {
				continue
			}
			props := rule.(map[string]any)
			for name, sub := range props {
				if val, has := obj[name]; has {
					v.validate(sub.(map[string]any), val, path+"."+name)
				}
			}
			if v.strict {
				for name := range obj {
					if _, declared := props[name]; !declared {
						v.fail(path, "member %q not declared in the schema", name)
					}
				}
			}
		case "items":
			if arr, ok := x.([]any); ok {
				for i, el := range arr {
					v.validate(rule.(map[string]any), el, fmt.Sprintf("%s[%d]", path, i))
				}
			}
		case "minLength":
			if str, ok := x.(string); ok && float64(len([]rune(str))) < rule.(float64) {
				v.fail(path, "%q shorter than %v", str, rule)
			}
		case "minimum", "maximum":
			n, ok := x.(json.Number)
			if !ok {
				continue
			}
			val, _, err := big.ParseFloat(string(n), 10, 128, big.ToNearestEven)
			if err != nil {
				v.fail(path, "bad number %s", n)
				continue
			}
			c := val.Cmp(big.NewFloat(rule.(float64)))
			if (k == "minimum" && c < 0) || (k == "maximum" && c > 0) {
				v.fail(path, "%s violates %s %v", n, k, rule)
			}
		case "pattern":
			if str, ok := x.(string); ok && !regexp.MustCompile(rule.(string)).MatchString(str) {
				v.fail(path, "%q does not match %s", str, rule)
			}
		case "format":
			if str, ok := x.(string); ok && rule == "date-time" {
				if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
					v.fail(path, "%q is not a date-time", str)
				}
			} else if rule != "date-time" {
				v.fail(path, "unsupported format %v", rule)
			}
		default:
			v.fail(path, "validator does not support keyword %q", k)
		}
	}
}

func hasType(x any, t string) bool {
	switch t {
	case "object":
		_, ok := x.(map[string]any)
		return ok
	case "array":
		_, ok := x.([]any)
		return ok
	case "string":
		_, ok := x.(string)
		return ok
	case "null":
		return x == nil
	case "boolean":
		_, ok := x.(bool)
		return ok
	case "number":
		_, ok := x.(json.Number)
		return ok
	case "integer":
		n, ok := x.(json.Number)
		if !ok {
			return false
		}
		_, isInt := new(big.Int).SetString(string(n), 10)
		return isInt
	}
	return false
}

func sameJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func show(x any) string { b, _ := json.Marshal(x); return string(b) }

func decodeGeneric(t *testing.T, data []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber() // keeps uint64 ids exact
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func samples(t *testing.T) []Message {
	t.Helper()
	tm := time.Date(2024, 3, 1, 12, 0, 0, 5, time.UTC)
	oldest := tm.Add(-time.Hour)
	pos := SourcePosition{File: "mysql-bin.000007", Pos: 4242, GTID: "0-1-77", Txn: "0-1-77"}
	out := []Message{
		NewUserChanged("dialsync/main", "dialsync", tm, UserChanged{UserID: 18446744073709551615,
			Tables: []string{"claims", "users"}, Operations: []string{"delete", "insert", "update"}, Columns: []string{"status"},
			Values: map[string]any{"status": "active"}, Source: pos}),
		NewUserChanged("dialsync/main", "dialsync", tm, UserChanged{UserID: 1, Source: SourcePosition{Txn: "bin.1:4"}}),
	}
	for _, k := range []string{KindEntered, KindLeft, KindUpdated} {
		out = append(out,
			NewQueueChanged("dialsync/main", "dialsync", k, tm, QueueChanged{UserID: 2, OpenClaims: 1, PendingRequirements: 3, OldestPendingAt: &oldest, Source: pos}),
			NewQueueChanged("dialsync/main", "dialsync", k, tm, QueueChanged{UserID: 3, Source: pos}))
	}
	rc, err := NewReconcileCompleted("dialsync/main", "dialsync", tm, ReconcileCompleted{RunID: "r1", Reason: "periodic",
		StartedAt: tm, FinishedAt: tm.Add(time.Second), Users: 50000, Queued: 10, Updated: 1})
	if err != nil {
		t.Fatal(err)
	}
	dl, err := NewDeadLetter("dialsync/main", "dialsync", tm, DeadLetter{Table: "claims", Operation: "update", Seq: 0,
		Error: "decode: bad value", UserIDs: []uint64{5}, Source: pos})
	if err != nil {
		t.Fatal(err)
	}
	return append(out, rc, dl)
}

func TestEncodedNoticesMatchSchemas(t *testing.T) {
	schemas := loadSchemas(t)
	used := map[string]bool{}
	for _, m := range samples(t) {
		doc := decodeGeneric(t, m.Data)
		typ, _ := doc["type"].(string)
		s, ok := schemas[typ]
		if !ok {
			t.Fatalf("no schema file for type %q", typ)
		}
		used[typ] = true
		v := &validator{root: s, strict: true}
		v.validate(s, doc, "$")
		if len(v.errs) > 0 {
			t.Errorf("%s does not match its schema:\n  %s\n  %s", m.ID, strings.Join(v.errs, "\n  "), m.Data)
		}
	}
	for typ := range schemas {
		if !used[typ] {
			t.Errorf("schema %s has no sample", typ)
		}
	}
	for _, typ := range []string{TypeUserChanged, TypeQueueEntered, TypeQueueLeft, TypeQueueUpdated, TypeReconcileCompleted, TypeDeadLetter} {
		if !used[typ] {
			t.Errorf("type %s has no schema or sample", typ)
		}
	}
}

// The validator must catch violations (otherwise the test above proves
// nothing), and must accept unknown members (forward compatibility).
func TestSchemaValidatorCatchesViolations(t *testing.T) {
	schemas := loadSchemas(t)
	good := samples(t)[0].Data
	mutations := []struct {
		name    string
		mutate  func(m map[string]any)
		wantErr bool
	}{
		{"unchanged", func(map[string]any) {}, false},
		{"unknown members", func(m map[string]any) {
			m["newfield"] = 1
			m["data"].(map[string]any)["later"] = []any{"x"}
		}, false},
		{"missing id", func(m map[string]any) { delete(m, "id") }, true},
		{"id with space", func(m map[string]any) { m["id"] = "a b" }, true},
		{"wrong type const", func(m map[string]any) { m["type"] = TypeQueueLeft }, true},
		{"wrong specversion", func(m map[string]any) { m["specversion"] = "0.3" }, true},
		{"bad time", func(m map[string]any) { m["time"] = "yesterday" }, true},
		{"user_id as string", func(m map[string]any) { m["data"].(map[string]any)["user_id"] = "1" }, true},
		{"negative user_id", func(m map[string]any) { m["data"].(map[string]any)["user_id"] = json.Number("-1") }, true},
		{"fractional user_id", func(m map[string]any) { m["data"].(map[string]any)["user_id"] = json.Number("1.5") }, true},
		{"bad operation", func(m map[string]any) { m["data"].(map[string]any)["operations"] = []any{"upsert"} }, true},
		{"tables null", func(m map[string]any) { m["data"].(map[string]any)["tables"] = nil }, true},
		{"missing source.txn", func(m map[string]any) {
			delete(m["data"].(map[string]any)["source"].(map[string]any), "txn")
		}, true},
	}
	for _, mu := range mutations {
		doc := decodeGeneric(t, good)
		mu.mutate(doc)
		s := schemas[TypeUserChanged]
		v := &validator{root: s}
		v.validate(s, doc, "$")
		if got := len(v.errs) > 0; got != mu.wantErr {
			t.Errorf("%s: errors %v, want error=%v", mu.name, v.errs, mu.wantErr)
		}
	}
	// Queue: oldest_pending_at must be a date-time or null.
	var q Message
	for _, m := range samples(t) {
		if strings.Contains(m.ID, "/queue.entered/") {
			q = m
			break
		}
	}
	for val, wantErr := range map[any]bool{nil: false, "2024-01-01T00:00:00Z": false, json.Number("5"): true, "soon": true} {
		doc := decodeGeneric(t, q.Data)
		doc["data"].(map[string]any)["oldest_pending_at"] = val
		s := schemas[TypeQueueEntered]
		v := &validator{root: s}
		v.validate(s, doc, "$")
		if got := len(v.errs) > 0; got != wantErr {
			t.Errorf("oldest_pending_at=%v: errors %v, want error=%v", val, v.errs, wantErr)
		}
	}
}
