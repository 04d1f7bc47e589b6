package cache

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The machine's Redis (see the repository's test conventions).
const testAddr = "127.0.0.1:6379"

var unsafeKeyChars = regexp.MustCompile(`[^A-Za-z0-9_/-]`)

// testPrefix returns a key prefix unique to the test, and deletes every key
// under it when the test ends. Glob characters are replaced so that the
// SCAN pattern matches only this test's keys.
func testPrefix(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	prefix := "dialsync-test:" + unsafeKeyChars.ReplaceAllString(t.Name(), "_") + ":"
	clean := func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("clean keys %s*: %v", prefix, err)
		}
	}
	clean() // leftovers of an interrupted earlier run
	t.Cleanup(clean)
	return prefix
}

// rawClient is an independent connection for setting up and checking keys.
func rawClient(t testing.TB, db int) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testAddr, DB: db})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("redis at %s is needed for this test: %v", testAddr, err)
	}
	return rdb
}

func openTest(t testing.TB, cfg Config) *Cache {
	t.Helper()
	c, err := Open(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// setKeys creates n keys named prefix+name+i and returns their names.
func setKeys(t testing.TB, rdb *redis.Client, prefix, name string, n int) []string {
	t.Helper()
	keys := make([]string, n)
	pairs := make([]any, 0, 2*n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s%s%d", prefix, name, i)
		pairs = append(pairs, keys[i], "v")
	}
	for start := 0; start < len(pairs); start += 20_000 {
		if err := rdb.MSet(t.Context(), pairs[start:min(start+20_000, len(pairs))]...).Err(); err != nil {
			t.Fatalf("set keys: %v", err)
		}
	}
	return keys
}

func countExisting(t testing.TB, rdb *redis.Client, keys []string) int {
	t.Helper()
	n := 0
	for start := 0; start < len(keys); start += 10_000 {
		got, err := rdb.Exists(t.Context(), keys[start:min(start+10_000, len(keys))]...).Result()
		if err != nil {
			t.Fatalf("exists: %v", err)
		}
		n += int(got)
	}
	return n
}

func TestDelRemovesExactlyTheGivenKeys(t *testing.T) {
	rdb := rawClient(t, 0)
	prefix := testPrefix(t, rdb)
	doomed := setKeys(t, rdb, prefix, "user:doomed:", 5)
	kept := setKeys(t, rdb, prefix, "user:kept:", 5)
	c := openTest(t, Config{Addr: testAddr})

	// A missing key and a repeated key are not errors.
	if err := c.Del(t.Context(), append(doomed, prefix+"never-existed", doomed[0])); err != nil {
		t.Fatalf("Del: %v", err)
	}
	if n := countExisting(t, rdb, doomed); n != 0 {
		t.Errorf("%d of the deleted keys still exist", n)
	}
	if n := countExisting(t, rdb, kept); n != len(kept) {
		t.Errorf("%d of %d other keys remain, want all", n, len(kept))
	}
	// Idempotent: deleting again succeeds and changes nothing.
	if err := c.Del(t.Context(), doomed); err != nil {
		t.Fatalf("Del again: %v", err)
	}
	if n := countExisting(t, rdb, kept); n != len(kept) {
		t.Errorf("after a repeated Del %d of %d other keys remain", n, len(kept))
	}
}

func TestDelEmptyList(t *testing.T) {
	c := openTest(t, Config{Addr: testAddr})
	if err := c.Del(t.Context(), nil); err != nil {
		t.Errorf("Del(nil) = %v", err)
	}
}

func TestDelLargeList(t *testing.T) {
	rdb := rawClient(t, 0)
	prefix := testPrefix(t, rdb)
	// More than two pipelines' worth, with a partial last chunk.
	keys := setKeys(t, rdb, prefix, "k", 2*MaxPipeline+123)
	kept := setKeys(t, rdb, prefix, "kept", 1)
	c := openTest(t, Config{Addr: testAddr})

	start := time.Now()
	if err := c.Del(t.Context(), keys); err != nil {
		t.Fatalf("Del %d keys: %v", len(keys), err)
	}
	t.Logf("deleted %d keys in %v", len(keys), time.Since(start))
	if n := countExisting(t, rdb, keys); n != 0 {
		t.Errorf("%d of %d keys still exist", n, len(keys))
	}
	if countExisting(t, rdb, kept) != 1 {
		t.Error("a key outside the list was deleted")
	}
}

func TestDelReportsFailure(t *testing.T) {
	rdb := rawClient(t, 0)
	prefix := testPrefix(t, rdb)
	keys := setKeys(t, rdb, prefix, "k", 3)

	c := openTest(t, Config{Addr: testAddr})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := c.Del(ctx, keys)
	if err == nil {
		t.Fatal("Del with a cancelled context succeeded")
	}
	for _, want := range []string{"cache: del", "127.0.0.1:6379/0", "context canceled"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), prefix) {
		t.Errorf("error %q names a key", err)
	}

	closed, err := Open(t.Context(), Config{Addr: testAddr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := closed.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := closed.Del(t.Context(), keys); err == nil {
		t.Error("Del after Close succeeded")
	}
	if n := countExisting(t, rdb, keys); n != len(keys) {
		t.Errorf("failed Dels removed keys: %d of %d remain", n, len(keys))
	}
}

// freeAddr returns a local address nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestOpenErrorsNameTheAddressNotThePassword(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	dead := freeAddr(t)
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"nothing listens", Config{Addr: dead}, []string{dead, "connection refused"}},
		{"nothing listens, URL with password",
			Config{Addr: "redis://app:" + secret + "@" + dead + "/0"}, []string{dead}},
		{"nothing listens, password field", Config{Addr: dead, Password: secret}, []string{dead}},
		{"wrong password", Config{Addr: testAddr, Username: "nobody", Password: secret},
			[]string{testAddr}},
		{"db out of range", Config{Addr: testAddr, DB: 100_000}, []string{testAddr + "/100000"}},
		{"TLS to a plain server", Config{Addr: testAddr, TLS: &tls.Config{InsecureSkipVerify: true}},
			[]string{testAddr}},
		{"empty addr", Config{}, []string{"empty"}},
		{"no port", Config{Addr: "localhost"}, []string{`"localhost"`, "host:port"}},
		{"credentials without a URL", Config{Addr: "app:" + secret + "@" + dead}, []string{"redis://"}},
		{"bad scheme", Config{Addr: "http://app:" + secret + "@" + dead}, []string{`"http"`}},
		{"malformed URL", Config{Addr: "redis://app:" + secret + "@host:port:x/0"}, []string{"malformed"}},
		{"bad db in URL", Config{Addr: "redis://app:" + secret + "@" + dead + "/abc"}, []string{"database"}},
		{"negative db", Config{Addr: testAddr, DB: -1}, []string{"-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Parallel: a refused dial takes go-redis about 2 s of retries.
			t.Parallel()
			// Bounded: a TLS handshake with a plain server waits for
			// the dial timeout on every retry.
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			c, err := Open(ctx, tc.cfg, nil)
			if err == nil {
				_ = c.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if !strings.HasPrefix(msg, "cache: ") {
				t.Errorf("error %q does not say which component failed", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error %q contains the password", msg)
			}
		})
	}
}

func TestOpenURLSelectsDB(t *testing.T) {
	const db = 3
	rdb := rawClient(t, db)
	prefix := testPrefix(t, rdb)
	keys := setKeys(t, rdb, prefix, "k", 2)
	// The same key names in DB 0 must survive a Del against DB 3.
	rdb0 := rawClient(t, 0)
	prefix0 := testPrefix(t, rdb0)
	if prefix0 != prefix {
		t.Fatal("prefixes differ")
	}
	setKeys(t, rdb0, prefix, "k", 2)

	c := openTest(t, Config{Addr: fmt.Sprintf("redis://%s/%d", testAddr, db)})
	if got, want := c.Addr(), fmt.Sprintf("%s/%d", testAddr, db); got != want {
		t.Errorf("Addr() = %q, want %q", got, want)
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := c.Del(t.Context(), keys); err != nil {
		t.Fatalf("Del: %v", err)
	}
	if n := countExisting(t, rdb, keys); n != 0 {
		t.Errorf("%d keys remain in db %d", n, db)
	}
	if n := countExisting(t, rdb0, keys); n != 2 {
		t.Errorf("Del on db %d removed keys of db 0: %d of 2 remain", db, n)
	}

	// A non-zero DB field overrides the URL's.
	c5 := openTest(t, Config{Addr: fmt.Sprintf("redis://%s/%d", testAddr, db), DB: 5})
	if got, want := c5.Addr(), testAddr+"/5"; got != want {
		t.Errorf("Addr() with DB override = %q, want %q", got, want)
	}
}

func TestOptionsTLS(t *testing.T) {
	o, err := Options(Config{Addr: "rediss://cache.example.com:6380"})
	if err != nil {
		t.Fatal(err)
	}
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example.com" {
		t.Errorf("rediss:// TLS config = %+v, want ServerName cache.example.com", o.TLSConfig)
	}
	given := &tls.Config{MinVersion: tls.VersionTLS13}
	o, err = Options(Config{Addr: "cache.example.com:6380", TLS: given})
	if err != nil {
		t.Fatal(err)
	}
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example.com" || o.TLSConfig.MinVersion != tls.VersionTLS13 {
		t.Errorf("TLS config = %+v, want the given one with ServerName set", o.TLSConfig)
	}
	if given.ServerName != "" {
		t.Error("options modified the caller's tls.Config")
	}
	o, err = Options(Config{Addr: "redis://u:p@h:1/2", Username: "u2", Password: "p2"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Username != "u2" || o.Password != "p2" || o.DB != 2 || o.Addr != "h:1" {
		t.Errorf("options = user %q db %d addr %q; want the fields to override the URL's credentials", o.Username, o.DB, o.Addr)
	}
}

func TestMain(m *testing.M) {
	// go-redis logs refused dials to stderr; keep test output readable.
	SetLibraryLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
