package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// keyTypes maps every TOML key, sections included, to its Go type, so a
// type error can say what the key expects.
var keyTypes = func() map[string]reflect.Type {
	m := map[string]reflect.Type{}
	var add func(t reflect.Type, path []string)
	add = func(t reflect.Type, path []string) {
		for i := range t.NumField() {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
			if sf.Anonymous && name == "" {
				add(sf.Type, path)
				continue
			}
			p := append(append([]string(nil), path...), name)
			m[strings.Join(p, ".")] = sf.Type
			if !isLeaf(sf.Type) {
				add(sf.Type, p)
			}
		}
	}
	add(reflect.TypeFor[Config](), nil)
	return m
}()

var tomlKindRe = regexp.MustCompile(`cannot (?:decode|store) (?:TOML )?(\w+(?: \w+)?) into`)

// decodeError turns a go-toml error into one "config: " line naming the key
// and the line. go-toml's own human-readable form (DecodeError.String) is not
// used: it quotes the document line, which may hold a secret.
func decodeError(err error) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		parts := make([]string, 0, len(sm.Errors))
		for i := range sm.Errors {
			e := &sm.Errors[i]
			line, _ := e.Position()
			parts = append(parts, fmt.Sprintf("%q (line %d)", strings.Join(e.Key(), "."), line))
		}
		noun := "key"
		if len(parts) > 1 {
			noun = "keys"
		}
		return fmt.Errorf("config: unknown %s %s: check the spelling; see config.toml for every key", noun, strings.Join(parts, ", "))
	}
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return fmt.Errorf("config: decode TOML: %w", err)
	}
	line, _ := de.Position()
	key := strings.Join(de.Key(), ".")
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	t, known := keyTypes[key]
	if !known {
		// Syntax errors carry no key, or only the local part of one.
		return fmt.Errorf("config: invalid TOML at line %d: %s", line, msg)
	}
	if m := tomlKindRe.FindStringSubmatch(msg); m != nil {
		got := m[1]
		return fmt.Errorf("config: %s (line %d): expected %s, got a TOML %s", key, line, describeKey(key, t), got)
	}
	if strings.Contains(msg, "cannot be stored in") { // integer overflow
		return fmt.Errorf("config: %s (line %d): expected %s: value out of range", key, line, describeKey(key, t))
	}
	return fmt.Errorf("config: %s (line %d): %s", key, line, msg)
}

// checkValueKinds records in set every key the document sets, and finds a non-string value given to a Duration key (or a
// non-string, non-integer one to a ByteSize key) before decoding. go-toml
// hands such a value straight to UnmarshalText and returns its error without
// the key or line, so this pass names both. Syntax errors are left to the
// decoder, which reports them with their line.
func checkValueKinds(doc []byte, set map[string]bool) error {
	var p unstable.Parser
	p.Reset(doc)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyParts(e)
		case unstable.KeyValue:
			if err := checkKeyValue(&p, table, e, set); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkKeyValue(p *unstable.Parser, prefix []string, kv *unstable.Node, set map[string]bool) error {
	path := append(append([]string(nil), prefix...), keyParts(kv)...)
	key := strings.Join(path, ".")
	v := kv.Value()
	if v.Kind == unstable.InlineTable {
		for it := v.Children(); it.Next(); {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				if err := checkKeyValue(p, path, c, set); err != nil {
					return err
				}
			}
		}
		return nil
	}
	set[key] = true
	t := keyTypes[key]
	bad := false
	switch t {
	case reflect.TypeFor[Duration]():
		bad = v.Kind != unstable.String
	case reflect.TypeFor[ByteSize]():
		bad = v.Kind != unstable.String && v.Kind != unstable.Integer
	}
	if !bad {
		return nil
	}
	line := 0
	if k := kv.Key(); k.Next() {
		line = p.Shape(k.Node().Raw).Start.Line
	}
	return fmt.Errorf("config: %s (line %d): expected %s, got a TOML %s", key, line, describeKey(key, t), kindName(v.Kind))
}

func keyParts(n *unstable.Node) []string {
	var out []string
	for it := n.Key(); it.Next(); {
		out = append(out, string(it.Node().Data))
	}
	return out
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.Integer:
		return "integer"
	case unstable.Float:
		return "float"
	case unstable.Bool:
		return "boolean"
	case unstable.Array:
		return "array"
	case unstable.InlineTable:
		return "table"
	case unstable.String:
		return "string"
	}
	return "date/time"
}

// UsageError marks an error the command line or the configuration caused
// (a bad value, a file a key names that cannot be read): dialsync exits 2
// for it, 1 for everything else (the exit codes the README documents).
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef is a UsageError with a formatted message.
func Usagef(format string, a ...any) error { return UsageError{fmt.Errorf(format, a...)} }
