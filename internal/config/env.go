package config

import (
	"fmt"
	"strings"
)

// NotConfigEnv are the DIALSYNC_* variables the project itself uses that
// are not configuration keys: test and benchmark switches, and the
// TypeScript client example's settings. CheckEnv lets them pass; every
// other DIALSYNC_ name must be a key's DIALSYNC_<SECTION>_<KEY> (README,
// "Configuration"). Add a new variable of that kind here.
var NotConfigEnv = map[string]bool{
	"DIALSYNC_TEST_POSTGRES":      true, // internal/dev/testenv: the tests' PostgreSQL
	"DIALSYNC_TEST_NATS_URL":      true, // deploy/nats tests
	"DIALSYNC_TEST_MYSQL_ADDR":    true, // deploy/mysql tests
	"DIALSYNC_TEST_LARGE":         true, // cmd/dialsync large-transaction test size
	"DIALSYNC_TEST_MAX_TXN_BYTES": true, // cmd/dialsync large-transaction test
	"DIALSYNC_SEED_DEFAULT":       true, // internal/dev/demo, internal/lookup slow tests
	"DIALSYNC_MEASURE_RECONCILE":  true, // cmd/dialsync reconcile measurement
	"DIALSYNC_LOOKUP_BENCH_DB":    true, // internal/lookup benchmark database
	"DIALSYNC_STREAM":             true, // clients/typescript Next.js example
	"DIALSYNC_SUBJECT_PREFIX":     true, // clients/typescript Next.js example
}

// CheckEnv returns an error naming every DIALSYNC_* variable in environ
// ("NAME=value", as from os.Environ) that matches no key: a misspelt
// override (DIALSYNC_SOURCE_ADRR) would otherwise leave the file's value in
// force without a word. Values are never quoted (they may be secrets).
func CheckEnv(environ []string) error {
	bad := UnknownEnv(environ)
	if len(bad) == 0 {
		return nil
	}
	known := map[string]bool{}
	for _, f := range Default().fields() {
		known[f.Env] = true
	}
	msgs := make([]string, len(bad))
	for i, name := range bad {
		msgs[i] = name
		if near := nearestEnv(name, known); near != "" {
			msgs[i] += " (did you mean " + near + "?)"
		}
	}
	what := "environment variable %s matches"
	if len(msgs) > 1 {
		what = "environment variables %s match"
	}
	return fmt.Errorf("config: "+what+" no config key: fix the name (DIALSYNC_<SECTION>_<KEY>, see config.toml) or unset it",
		strings.Join(msgs, ", "))
}

// nearestEnv is the known name closest to name, if it is close (a typo).
func nearestEnv(name string, known map[string]bool) string {
	best, bestD := "", 3 // at most 2 edits
	for k := range known {
		if d := editDistance(name, k); d < bestD || (d == bestD && best != "" && k < best) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
