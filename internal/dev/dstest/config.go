// Package dstest is the harness shared by everything that runs the real
// dialsync binary: the end-to-end tests (cmd/dialsync), the fault-injection
// suite (internal/dev/chaos) and the bench (cmd/bench). It writes the
// binary's config from a typed config.Config (config.Default() plus fields
// set in Go; never a TOML template), connects to the machine's Redis and
// NATS the same way everywhere, and drives the demo workload from several
// writers at once. Starting and stopping the process is internal/dev/proc.
package dstest

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"dialsync/internal/config"
)

// Target names the places one pipeline under test uses on each server.
type Target struct {
	Pipeline    string // [pipeline] name, keys the checkpoint row
	SourceAddr  string // the binlog source (a private MariaDB), user root
	Database    string // the source schema holding the tracked tables
	ServerID    uint32 // the replica server_id dialsync announces
	PostgresDSN string
	RedisAddr   string // "" keeps the default, the machine's Redis
	RedisPrefix string
	NATSURL     string // "" keeps the default, the machine's NATS
	Stream      string
	Subjects    string // [nats] subject_prefix
}

// Config returns config.Default() pointed at t, with what every harness
// shares: the source is a MariaDB read as root, heartbeats every 1s with a
// 5s read timeout (a dead connection is noticed quickly), no HTTP server, no
// scheduled reconcile, JSON logs at level info. Callers set anything else
// on the result.
func Config(t Target) *config.Config {
	c := config.Default()
	c.Pipeline.Name = t.Pipeline
	c.Source.Addr = t.SourceAddr
	c.Source.User = "root"
	c.Source.Flavor = "mariadb"
	c.Source.ServerID = t.ServerID
	c.Source.Database = t.Database
	c.Source.HeartbeatPeriod = config.Dur(time.Second)
	c.Source.ReadTimeout = config.Dur(5 * time.Second)
	c.Postgres.DSN = t.PostgresDSN
	if t.RedisAddr != "" {
		c.Redis.Addr = t.RedisAddr
	}
	c.Redis.Prefix = t.RedisPrefix
	if t.NATSURL != "" {
		c.NATS.URL = t.NATSURL
	}
	c.NATS.Stream = t.Stream
	c.NATS.SubjectPrefix = t.Subjects
	c.HTTP.Listen = ""
	c.Reconcile.Interval = config.Dur(0)
	c.Log.Format = "json"
	c.Log.Level = "info"
	return c
}

// Marshal renders c as the TOML document dialsync reads: every key, so the
// file says all the binary will use (config.Load of it gives c back).
func Marshal(c *config.Config) ([]byte, error) {
	b, err := toml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("dstest: marshal config: %w", err)
	}
	return b, nil
}

// WriteConfig writes c to path (mode 0600: it may hold a DSN with a
// password).
func WriteConfig(path string, c *config.Config) error {
	b, err := Marshal(c)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("dstest: write config: %w", err)
	}
	return nil
}

// MarshalBad renders c and then sets raw over it: each key is a dotted TOML
// key ("ha.enabeld") and its value is written as given, even where no
// config.Config could hold it. It is for the tests of bad configs (an
// unknown key, a value of the wrong type) that want one broken key in an
// otherwise working config; a valid config is always a config.Config.
func MarshalBad(c *config.Config, raw map[string]any) ([]byte, error) {
	b, err := Marshal(c)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("dstest: reread config: %w", err)
	}
	for key, v := range raw {
		parts := strings.Split(key, ".")
		m := doc
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	}
	out, err := toml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("dstest: marshal bad config: %w", err)
	}
	return out, nil
}
