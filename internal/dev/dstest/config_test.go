package dstest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
)

func target() Target {
	return Target{
		Pipeline: "p_test", SourceAddr: "127.0.0.1:3306", Database: "src", ServerID: 4242,
		PostgresDSN: "postgres://postgres@127.0.0.1:5432/x?sslmode=disable",
		RedisPrefix: "t:", Stream: "DS_T", Subjects: "ds_t",
	}
}

// roundTrip writes c and loads it back as the binary does.
func roundTrip(t *testing.T, c *config.Config) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := WriteConfig(path, c); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load(path, nil)
	if err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("load the written config: %v\n%s", err, b)
	}
	return got
}

// sameSettings compares every exported field (every key); the loader's
// unexported bookkeeping (which keys were set, and from where) differs by
// design between a loaded config and one built in Go.
func sameSettings(a, b *config.Config) bool {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	for i := range va.NumField() {
		if va.Type().Field(i).IsExported() && !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return false
		}
	}
	return true
}

// Every config the harnesses write reads back equal, every key included.
func TestWriteConfigRoundTrips(t *testing.T) {
	cases := map[string]func(c *config.Config){
		"target": func(*config.Config) {},
		"defaults": func(c *config.Config) {
			c.Source.HeartbeatPeriod, c.Source.ReadTimeout = config.Default().Source.HeartbeatPeriod, config.Default().Source.ReadTimeout
		},
		"every kind": func(c *config.Config) {
			c.Source.Password = `p"w\x`
			c.Postgres.Schema = "other"
			c.Redis.Password = "secret"
			c.NATS.MaxBytes = 3*config.MiB + 5
			c.NATS.ManageStream = false
			c.HTTP.Listen, c.HTTP.Pprof = "127.0.0.1:0", true
			c.Apply.RetryInitial, c.Apply.RetryMax = config.Dur(20*time.Millisecond), config.Dur(500*time.Millisecond)
			c.Apply.BatchWindow = config.Dur(1500 * time.Microsecond)
			c.Apply.MaxBatchBytes = 512 * config.KiB
			c.Rules.QueueSQL = "SELECT FROM WHERE\n  {users}\n"
			c.Cache.UserKeys = []string{"u:{id}"}
			c.Cache.QueueKeys = []string{}
			c.Notices.IncludeValues = []string{"users.status"}
			c.Reconcile.Interval, c.Reconcile.ChunkSize = config.Dur(time.Second), 20
			c.Recovery.OnPurged = "reconcile"
			c.Tables.ClaimRequirements.OnError = config.OnErrorDeadLetter
			c.HA.LeaseTTL = config.Dur(30 * time.Second)
			c.Log.Level = "debug"
		},
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			c := Config(target())
			edit(c)
			if got := roundTrip(t, c); !sameSettings(got, c) {
				t.Errorf("loaded config differs:\n got %+v\nwant %+v", got, c)
			}
		})
	}
}

// Config is the default configuration plus the target and the shared test
// settings, nothing else.
func TestConfigSetsOnlyItsFields(t *testing.T) {
	c := Config(target())
	d := config.Default()
	if c.Source.Addr != "127.0.0.1:3306" || c.Source.User != "root" || c.Source.Flavor != "mariadb" || c.Source.ServerID != 4242 ||
		c.Redis.Addr != d.Redis.Addr || c.NATS.URL != d.NATS.URL || c.Reconcile.Interval.Duration() != 0 || c.HTTP.Listen != "" {
		t.Fatalf("config: %+v", c)
	}
	if !reflect.DeepEqual(c.Apply, d.Apply) || !reflect.DeepEqual(c.HA, d.HA) || !reflect.DeepEqual(c.Cache, d.Cache) {
		t.Errorf("sections Config does not set differ from the defaults")
	}
}

// MarshalBad adds a key the Config type cannot hold, leaving the rest.
func TestMarshalBad(t *testing.T) {
	b, err := MarshalBad(Config(target()), map[string]any{"ha.enabeld": true, "ha.enabled": "yes"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.Parse(strings.NewReader(string(b)), nil)
	if err == nil || !strings.Contains(err.Error(), "ha.en") {
		t.Fatalf("bad config parsed: %v\n%s", err, b)
	}
	for _, want := range []string{"enabeld = true", "enabled = 'yes'", "addr = '127.0.0.1:3306'"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("no %q in\n%s", want, b)
		}
	}
}
