package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
)

var names sync.Map // testing.TB -> string

// maxNameBase keeps names well inside MySQL's 64 and PostgreSQL's 63
// character identifier limits after the random suffix.
const maxNameBase = 40

// Name returns a lowercase identifier for the test, made of [a-z0-9_]: the
// test's name, sanitised and shortened, plus a random suffix so reruns
// (-count) and parallel test binaries never collide. It is usable as a
// MySQL/PostgreSQL database name, a Redis key prefix, a NATS subject token
// and a JetStream stream name. Repeated calls in one test return the same
// name.
func Name(tb testing.TB) string {
	tb.Helper()
	if v, ok := names.Load(tb); ok {
		return v.(string)
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	n := sanitize(tb.Name()) + "_" + hex.EncodeToString(suffix[:])
	if v, loaded := names.LoadOrStore(tb, n); loaded {
		return v.(string)
	}
	tb.Cleanup(func() { names.Delete(tb) })
	return n
}

// sanitize lowercases s, maps every run of other characters to one '_', and
// makes sure the result starts with a letter.
func sanitize(s string) string {
	var b strings.Builder
	lastUnderscore := true // drops leading separators
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			lastUnderscore = false
		case !lastUnderscore:
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	out := strings.TrimRight(b.String(), "_")
	if len(out) > maxNameBase {
		out = strings.TrimRight(out[:maxNameBase], "_")
	}
	if out == "" || out[0] < 'a' || out[0] > 'z' {
		out = "t_" + out
	}
	return out
}
