package config

import (
	"encoding"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// field is one leaf key of the configuration, found by reflection over the
// toml tags so that env overrides, secret handling and the sample-file test
// can never forget a key.
type field struct {
	Key    string        // TOML form: "tables.claims.on_error"
	Env    string        // DIALSYNC_TABLES_CLAIMS_ON_ERROR
	Secret bool          // tagged secret:"true"
	Value  reflect.Value // settable
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// isLeaf reports whether t is a value (not a section to descend into).
func isLeaf(t reflect.Type) bool {
	return t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// fields lists every leaf key of c in declaration order.
func (c *Config) fields() []field {
	var out []field
	walk(reflect.ValueOf(c).Elem(), nil, &out)
	return out
}

func walk(v reflect.Value, path []string, out *[]field) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		fv := v.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if sf.Anonymous && name == "" {
			walk(fv, path, out) // embedded (TLSConfig): keys sit in the parent
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		p := append(append([]string(nil), path...), name)
		if !isLeaf(sf.Type) {
			walk(fv, p, out)
			continue
		}
		*out = append(*out, field{
			Key:    strings.Join(p, "."),
			Env:    "DIALSYNC_" + strings.ToUpper(strings.Join(p, "_")),
			Secret: sf.Tag.Get("secret") == "true",
			Value:  fv,
		})
	}
}

// applyEnv applies every DIALSYNC_<SECTION>_<KEY> variable that is set. An
// empty value is applied too (it is how to clear a default, e.g.
// DIALSYNC_HTTP_LISTEN= disables the HTTP server).
func (c *Config) applyEnv(env func(string) (string, bool)) error {
	if env == nil {
		return nil
	}
	fs := c.fields()
	byKey := make(map[string]field, len(fs))
	for _, f := range fs {
		byKey[f.Key] = f
	}
	for _, f := range fs {
		s, ok := env(f.Env)
		if !ok {
			continue
		}
		if err := setFromString(f.Value, s, describeKey(f.Key, f.Value.Type())); err != nil {
			// The value is echoed only for typed (never secret) keys.
			return fmt.Errorf("config: %s (from %s): %v", f.Key, f.Env, err)
		}
		if c.origin == nil {
			c.origin = map[string]string{}
		}
		c.origin[f.Key] = f.Env
		// Environment beats the file: a secret set in the environment
		// replaces its _file counterpart from config.toml and vice versa,
		// so an operator can override either form without editing the file.
		// Setting both forms in the same place is an error (readSecretFiles).
		var other string
		if k, ok := strings.CutSuffix(f.Key, "_file"); ok && byKey[k].Secret {
			other = k
		} else if f.Secret {
			other = f.Key + "_file"
		}
		if o, ok := byKey[other]; ok {
			if _, envToo := env(o.Env); !envToo {
				o.Value.SetString("")
			}
		}
	}
	return nil
}

// setFromString parses s into v according to v's type. Errors never include
// s for string kinds (secrets are strings; strings cannot fail anyway).
func setFromString(v reflect.Value, s, want string) error {
	if tu, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		if v.Kind() == reflect.Int64 { // ByteSize: a bare number of bytes too
			if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
				v.SetInt(n)
				return nil
			}
		}
		return tu.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("expected true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("expected %s, got %q", want, s)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("expected %s, got %q", want, s)
		}
		v.SetUint(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type %s", v.Type())
		}
		v.Set(reflect.ValueOf(splitList(s)))
		if v.IsNil() {
			v.Set(reflect.ValueOf([]string{}))
		}
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// keyRanges are the keys whose valid values are narrower than their type's.
var keyRanges = map[string]string{
	"source.server_id": "an integer 1..4294967295 (0 is not a valid replica server_id)",
}

// describeKey says in words what key (of type t) expects.
func describeKey(key string, t reflect.Type) string {
	if r, ok := keyRanges[key]; ok {
		return r
	}
	return describe(t)
}

// describe says in words what a key of type t expects.
func describe(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[Duration]():
		return `a duration string such as "10s", "500ms" or "1h30m"`
	case reflect.TypeFor[ByteSize]():
		return `a size such as "8MiB", "512KiB", "1GB" or a number of bytes`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("an integer 0..%d", uint64(1)<<t.Bits()-1)
	case reflect.Slice:
		return `a list of strings such as ["a", "b"]`
	case reflect.Struct:
		return "a table"
	}
	return t.String()
}

// readSecretFiles replaces each secret with the contents of its _file key
// (one trailing newline trimmed, as written by `echo` or most secret stores).
func (c *Config) readSecretFiles() error {
	fs := c.fields()
	byKey := make(map[string]field, len(fs))
	for _, f := range fs {
		byKey[f.Key] = f
	}
	for _, f := range fs {
		if !f.Secret {
			continue
		}
		ff, ok := byKey[f.Key+"_file"]
		if !ok {
			continue
		}
		path := ff.Value.String()
		if path == "" {
			continue
		}
		if f.Value.String() != "" {
			return fmt.Errorf("config: both %s and %s are set: keep only one", c.name(f.Key), c.name(ff.Key))
		}
		b, err := os.ReadFile(path)
		if err != nil {
			// os errors name the path, never the contents.
			return fmt.Errorf("config: %s: %w", c.name(ff.Key), err)
		}
		s := strings.TrimSuffix(string(b), "\n")
		s = strings.TrimSuffix(s, "\r")
		if s == "" {
			return fmt.Errorf("config: %s: file %q is empty", c.name(ff.Key), path)
		}
		f.Value.SetString(s)
	}
	return nil
}

// serviceLink matches the variables Kubernetes derives from a Service name
// (https://kubernetes.io/docs/concepts/services-networking/service/#environment-variables).
var serviceLink = regexp.MustCompile(`^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$`)

// UnknownEnv returns the DIALSYNC_* variables in environ ("NAME=value", as
// from os.Environ) that match no key and are not one of the project's own
// variables (NotConfigEnv), so a typo is never ignored silently (see
// CheckEnv). Kubernetes service links are skipped: a Service named
// dialsync-<x> in the pod's namespace puts DIALSYNC_<X>_SERVICE_HOST,
// _SERVICE_PORT*, _PORT and _PORT_<n>_<proto>* into every pod (the shipped
// deploy/kubernetes has dialsync-metrics), and they are not ours to refuse.
// Only names are returned.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, f := range Default().fields() {
		known[f.Env] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "DIALSYNC_") && !known[name] && !NotConfigEnv[name] && !serviceLink.MatchString(name) {
			out = append(out, name)
		}
	}
	return out
}
