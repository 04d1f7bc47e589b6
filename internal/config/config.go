// Package config loads dialsync's configuration: defaults first, then a strict
// TOML decode over them (an unknown key is an error naming it), then
// environment overrides (DIALSYNC_<SECTION>_<KEY> for every key), then secrets
// read from *_file paths, then Validate. Every error is one line starting with
// "config: " that names the key in its TOML form (and the environment variable
// when the value came from one) and says what to do. Secret values never
// appear in an error or in Redacted.
//
// The repository's config.toml is the commented sample of every key; a test
// keeps it and this package in step.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"dialsync/handlers"
)

// UsersToken is the placeholder in rules.queue_sql that dialsync replaces with
// a predicate on the user id (for the batch of users being recomputed).
const UsersToken = "{users}"

// Config is the whole configuration. Each section's fields carry the TOML key
// in their tag; `secret:"true"` marks values that are redacted and may also
// come from the sibling <key>_file.
type Config struct {
	Pipeline     PipelineConfig     `toml:"pipeline"`
	Source       SourceConfig       `toml:"source"`
	Lookup       LookupConfig       `toml:"lookup"`
	Postgres     PostgresConfig     `toml:"postgres"`
	Redis        RedisConfig        `toml:"redis"`
	NATS         NATSConfig         `toml:"nats"`
	HTTP         HTTPConfig         `toml:"http"`
	Apply        ApplyConfig        `toml:"apply"`
	Rules        RulesConfig        `toml:"rules"`
	Cache        CacheConfig        `toml:"cache"`
	Notices      NoticesConfig      `toml:"notices"`
	Reconcile    ReconcileConfig    `toml:"reconcile"`
	Recovery     RecoveryConfig     `toml:"recovery"`
	Tables       TablesConfig       `toml:"tables"`
	Housekeeping HousekeepingConfig `toml:"housekeeping"`
	Log          LogConfig          `toml:"log"`
	HA           HAConfig           `toml:"ha"`
	Health       HealthConfig       `toml:"health"`

	// origin maps a TOML key ("source.server_id") to the environment
	// variable that set it, so errors can name where a value came from.
	origin map[string]string
	// set holds the keys the file sets (Parse), so a validation error can
	// tell "missing" from "set to an invalid value".
	set map[string]bool
}

// PipelineConfig names this pipeline.
type PipelineConfig struct {
	// Name keys the checkpoint row, so several sources can share one
	// PostgreSQL database. [a-z0-9_-]{1,64}; default "main".
	Name string `toml:"name"`
}

// TLSConfig is the client TLS setting shared by [source], [redis] and [nats].
// It is embedded, so its keys sit directly in those sections.
type TLSConfig struct {
	// Mode: "disabled" (default), "required" (TLS with certificate and host
	// name verification) or "skip-verify" (TLS without verification: INSECURE,
	// for tests only).
	Mode string `toml:"tls_mode"`
	// CAFile is a PEM bundle of CAs to trust; empty means the system roots.
	CAFile string `toml:"tls_ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key for mutual
	// TLS; both or neither.
	CertFile string `toml:"tls_cert_file"`
	KeyFile  string `toml:"tls_key_file"`
	// ServerName overrides the name verified in the server certificate;
	// empty means the host part of the address.
	ServerName string `toml:"tls_server_name"`
}

// TLS modes.
const (
	TLSDisabled   = "disabled"
	TLSRequired   = "required"
	TLSSkipVerify = "skip-verify"
)

// SourceConfig is the MySQL/MariaDB server whose binlog dialsync reads.
type SourceConfig struct {
	Addr         string `toml:"addr"` // host:port; required
	User         string `toml:"user"` // required
	Password     string `toml:"password" secret:"true"`
	PasswordFile string `toml:"password_file"`
	// Flavor is "mysql" (default) or "mariadb".
	Flavor string `toml:"flavor"`
	// ServerID is the replica server_id dialsync announces; required, must be
	// unique among all replicas of the source (a duplicate makes the source
	// drop the other connection). 0 means unset.
	ServerID uint32 `toml:"server_id"`
	// Database is the schema holding the tracked tables; required.
	Database string `toml:"database"`
	// HeartbeatPeriod asks the source for a heartbeat event when idle, so lag
	// is measurable and a dead connection is noticed; must be < ReadTimeout.
	HeartbeatPeriod Duration `toml:"heartbeat_period"`
	// ReadTimeout is how long a binlog read may wait before the connection
	// is considered dead and reconnected. Default 90s: well above the
	// heartbeat period a server really keeps (some ignore the one asked for
	// and beat every 30s; a timeout equal to that reconnects every idle
	// minute).
	ReadTimeout Duration `toml:"read_timeout"`
	TLSConfig
}

// LookupConfig is where point lookups (and the queue rule) run. Empty fields
// inherit [source]; TLS settings always come from [source]. It MUST be the
// same server as the binlog source (dialsync checks at start), see
// Config.EffectiveLookup.
type LookupConfig struct {
	Addr         string `toml:"addr"`
	User         string `toml:"user"`
	Password     string `toml:"password" secret:"true"`
	PasswordFile string `toml:"password_file"`
	Database     string `toml:"database"`
}

// PostgresConfig is the dialler's database (queue, checkpoint, dead letters).
type PostgresConfig struct {
	// DSN is a libpq/pgx connection string (URL or key=value; TLS via
	// sslmode/sslrootcert). Required; secret because it may carry a password.
	DSN     string `toml:"dsn" secret:"true"`
	DSNFile string `toml:"dsn_file"`
	// Schema holds dialsync's tables; default "dialsync".
	Schema string `toml:"schema"`
	// MaxConns bounds the connection pool; default 4.
	MaxConns int `toml:"max_conns"`
}

// RedisConfig is the dialler's cache.
type RedisConfig struct {
	// Addr is "host:port", a comma-separated list of host:port (a cluster,
	// or sentinels when MasterName is set), or a redis:// / rediss:// URL.
	Addr string `toml:"addr"`
	// MasterName selects Redis Sentinel: Addr lists the sentinels.
	MasterName   string `toml:"master_name"`
	Username     string `toml:"username"`
	Password     string `toml:"password" secret:"true"`
	PasswordFile string `toml:"password_file"`
	DB           int    `toml:"db"`
	// Prefix is prepended to every key dialsync deletes; default none.
	Prefix string `toml:"prefix"`
	TLSConfig
}

// Addrs splits Addr into its comma-separated parts (a URL is one part).
func (r RedisConfig) Addrs() []string { return splitList(r.Addr) }

// NATSConfig is the JetStream server notices are published to.
type NATSConfig struct {
	// URL is one or more comma-separated nats:// (tls://, ws://, wss://) URLs.
	URL string `toml:"url"`
	// Stream is the JetStream stream name; default "DIALSYNC".
	Stream string `toml:"stream"`
	// SubjectPrefix starts every subject; the stream covers "<prefix>.>".
	SubjectPrefix string `toml:"subject_prefix"`
	// ManageStream lets dialsync create the stream and widen the one it
	// created; a stream it did not create is never changed. false means it
	// must exist (created by ops, see deploy/).
	ManageStream bool `toml:"manage_stream"`
	// ShrinkStream lets dialsync also cut retention, limits, the duplicate
	// window or subjects of the stream it created when the config asks for
	// less (false: such a config is an error, since cutting deletes notices).
	ShrinkStream bool `toml:"shrink_stream"`
	// DuplicateWindow is JetStream's Nats-Msg-Id dedupe window: replays older
	// than this after a crash are not deduplicated by the server.
	DuplicateWindow Duration `toml:"duplicate_window"`
	// MaxAge bounds notice retention; 0 means unlimited.
	MaxAge Duration `toml:"max_age"`
	// MaxBytes bounds the stream size; 0 means unlimited.
	MaxBytes ByteSize `toml:"max_bytes"`
	// Replicas is the stream replica count (1..5).
	Replicas int `toml:"replicas"`
	// Storage is "file" (default) or "memory".
	Storage string `toml:"storage"`
	// Authentication: at most one of CredsFile, NKeyFile, Token, User/Password.
	CredsFile    string `toml:"creds_file"`
	NKeyFile     string `toml:"nkey_file"`
	Token        string `toml:"token" secret:"true"`
	TokenFile    string `toml:"token_file"`
	User         string `toml:"user"`
	Password     string `toml:"password" secret:"true"`
	PasswordFile string `toml:"password_file"`
	// AckTimeout bounds the wait for a publish acknowledgement.
	AckTimeout Duration `toml:"ack_timeout"`
	TLSConfig
}

// HTTPConfig serves /metrics, /healthz and /readyz.
type HTTPConfig struct {
	// Listen is host:port; empty disables the server. Default 127.0.0.1:9120.
	Listen string `toml:"listen"`
	// Pprof serves Go's profiler under /debug/pprof/ (default false). Turn
	// it on only on a loopback or otherwise private listen address.
	Pprof bool `toml:"pprof"`
}

// ApplyConfig tunes the apply loop's batching and retries.
type ApplyConfig struct {
	// MaxBatchTxns caps source transactions applied as one batch.
	MaxBatchTxns int `toml:"max_batch_txns"`
	// MaxBatchBytes caps the (approximate) row bytes buffered per batch.
	MaxBatchBytes ByteSize `toml:"max_batch_bytes"`
	// BatchWindow is how long to wait for more transactions when the queue
	// is momentarily empty; 0 applies at once.
	BatchWindow Duration `toml:"batch_window"`
	// MaxTxnBytes: larger transactions are applied in pieces (the checkpoint
	// still moves only at their end).
	MaxTxnBytes ByteSize `toml:"max_txn_bytes"`
	// RetryInitial and RetryMax bound the exponential backoff (with jitter)
	// after a failed effect.
	RetryInitial Duration `toml:"retry_initial"`
	RetryMax     Duration `toml:"retry_max"`
}

// RulesConfig holds the business rules.
type RulesConfig struct {
	// QueueSQL is the queue rule evaluated on the lookup server; empty means
	// the built-in rule (docs/design.md, pipeline). It must contain UsersToken, which
	// dialsync replaces with a predicate on the user id for the batch.
	QueueSQL string `toml:"queue_sql"`
}

// CacheConfig names the Redis keys deleted on a change.
type CacheConfig struct {
	// UserKeys are per-user templates; each must contain
	// handlers.IDPlaceholder.
	UserKeys []string `toml:"user_keys"`
	// QueueKeys are deleted when queue membership or a queued row changes.
	QueueKeys []string `toml:"queue_keys"`
}

// NoticesConfig governs notice contents.
type NoticesConfig struct {
	// IncludeValues allow-lists "table.column" values that notices may carry;
	// empty (the default) means no row values (no PII) in notices.
	IncludeValues []string `toml:"include_values"`
}

// ReconcileConfig schedules full queue reconciles.
type ReconcileConfig struct {
	// Interval between periodic reconciles; 0 or "off" disables them.
	Interval Duration `toml:"interval"`
	// ChunkSize is the number of users recomputed per chunk.
	ChunkSize int `toml:"chunk_size"`
	// OnStart is "if-no-checkpoint" (default: the bootstrap), "always" or
	// "never".
	OnStart string `toml:"on_start"`
}

// RecoveryConfig says what to do when the binlog at the checkpoint is gone.
type RecoveryConfig struct {
	// OnPurged is "fail" (default: stop and name the recovery command) or
	// "reconcile" (jump to the head and run a full reconcile).
	OnPurged string `toml:"on_purged"`
}

// Table error policies.
const (
	OnErrorHalt       = "halt"
	OnErrorDeadLetter = "dead_letter"
)

// TablesConfig is the per-table policy for rows that cannot be processed.
type TablesConfig struct {
	// OnError is the default policy: "halt" (stop at the row's position) or
	// "dead_letter" (record it and go on).
	OnError string `toml:"on_error"`
	// DeadLetterRowImages stores row images with dead letters (they may
	// hold PII); default false stores only the position and error.
	DeadLetterRowImages bool `toml:"dead_letter_row_images"`

	Users                TablePolicy `toml:"users"`
	UserAddresses        TablePolicy `toml:"user_addresses"`
	Claims               TablePolicy `toml:"claims"`
	ClaimRequirements    TablePolicy `toml:"claim_requirements"`
	ClaimVehiclePackages TablePolicy `toml:"claim_vehicle_packages"`
}

// TablePolicy overrides TablesConfig for one table.
type TablePolicy struct {
	// OnError overrides [tables] on_error; empty inherits it.
	OnError string `toml:"on_error"`
}

// OnErrorFor returns the effective policy for a table (its override, else the
// default).
func (t TablesConfig) OnErrorFor(table string) string {
	if p := t.policy(table); p.OnError != "" {
		return p.OnError
	}
	return t.OnError
}

// policy is table's own section (zero for a table that is not tracked).
func (t TablesConfig) policy(table string) TablePolicy {
	switch table {
	case handlers.TableUsers:
		return t.Users
	case handlers.TableUserAddresses:
		return t.UserAddresses
	case handlers.TableClaims:
		return t.Claims
	case handlers.TableClaimRequirements:
		return t.ClaimRequirements
	case handlers.TableClaimVehiclePackages:
		return t.ClaimVehiclePackages
	}
	return TablePolicy{}
}

// HousekeepingConfig prunes checkpoint history and dead letters.
type HousekeepingConfig struct {
	// Retain is how long history and dead letters are kept.
	Retain Duration `toml:"retain"`
	// Interval between prunes; 0 or "off" disables pruning.
	Interval Duration `toml:"interval"`
}

// LogConfig configures log/slog output.
type LogConfig struct {
	Level string `toml:"level"` // debug | info | warn | error
	// Format: "auto" (text on a terminal, JSON otherwise), "json" or "text".
	Format string `toml:"format"`
}

// HAConfig controls leader election through a PostgreSQL advisory lock.
type HAConfig struct {
	// Enabled: only the instance holding the lease runs the pipeline, so two
	// instances can run side by side. false skips the election (one
	// instance only).
	Enabled bool `toml:"enabled"`
	// LeaseCheck is how often the leader renews its lease heartbeat (and a
	// standby looks at it).
	LeaseCheck Duration `toml:"lease_check"`
	// LeaseTTL: a standby takes over from a leader whose heartbeat is older
	// than this (a paused or cut-off leader), and a leader that cannot renew
	// within it stops writing. Must be greater than lease_check.
	LeaseTTL Duration `toml:"lease_ttl"`
}

// HealthConfig sets readiness thresholds.
type HealthConfig struct {
	// MaxLag: /readyz fails while replication lag exceeds it.
	MaxLag Duration `toml:"max_lag"`
}

// Default returns the configuration with every default set. The required keys
// (source addr/user/server_id/database, postgres dsn) are left empty.
func Default() *Config {
	return &Config{
		Pipeline: PipelineConfig{Name: "main"},
		Source: SourceConfig{
			Flavor:          "mysql",
			HeartbeatPeriod: Dur(10 * time.Second),
			ReadTimeout:     Dur(90 * time.Second),
			TLSConfig:       TLSConfig{Mode: TLSDisabled},
		},
		Postgres: PostgresConfig{Schema: "dialsync", MaxConns: 4},
		Redis:    RedisConfig{Addr: "127.0.0.1:6379", TLSConfig: TLSConfig{Mode: TLSDisabled}},
		NATS: NATSConfig{
			URL:             "nats://127.0.0.1:4222",
			Stream:          "DIALSYNC",
			SubjectPrefix:   "dialsync",
			ManageStream:    true,
			DuplicateWindow: Dur(2 * time.Minute),
			MaxAge:          Dur(72 * time.Hour),
			Replicas:        1,
			Storage:         "file",
			AckTimeout:      Dur(5 * time.Second),
			TLSConfig:       TLSConfig{Mode: TLSDisabled},
		},
		HTTP: HTTPConfig{Listen: "127.0.0.1:9120"},
		Apply: ApplyConfig{
			MaxBatchTxns:  2000,
			MaxBatchBytes: 2 * MiB,
			BatchWindow:   Dur(0),
			MaxTxnBytes:   2 * MiB,
			RetryInitial:  Dur(100 * time.Millisecond),
			RetryMax:      Dur(10 * time.Second),
		},
		Cache: CacheConfig{
			UserKeys:  slices.Clone(handlers.DefaultUserKeyTemplates),
			QueueKeys: slices.Clone(handlers.DefaultQueueKeys),
		},
		Notices:      NoticesConfig{IncludeValues: []string{}},
		Reconcile:    ReconcileConfig{Interval: Dur(time.Hour), ChunkSize: 5000, OnStart: "if-no-checkpoint"},
		Recovery:     RecoveryConfig{OnPurged: "fail"},
		Tables:       TablesConfig{OnError: OnErrorHalt},
		Housekeeping: HousekeepingConfig{Retain: Dur(720 * time.Hour), Interval: Dur(time.Hour)},
		Log:          LogConfig{Level: "info", Format: "auto"},
		HA:           HAConfig{Enabled: true, LeaseCheck: Dur(time.Second), LeaseTTL: Dur(3 * time.Second)},
		Health:       HealthConfig{MaxLag: Dur(30 * time.Second)},
	}
}

// Load reads the file at path and returns the validated configuration. env
// looks up environment variables (os.LookupEnv in production; nil for none).
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	c, _, err := LoadSources(path, env)
	return c, err
}

// LoadSources is Load that also says where each key's value came from
// (dialsync config print).
func LoadSources(path string, env func(string) (string, bool)) (*Config, Sources, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("config: file %q not found: copy the sample config.toml there or pass --config PATH", path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("config: read %q: %w", path, err)
	}
	c, err := decode(b, env)
	if err != nil {
		return nil, nil, err
	}
	return c, c.sources(), nil
}

// Parse decodes a TOML document over the defaults, applies environment
// overrides and *_file secrets, and validates.
func Parse(r io.Reader, env func(string) (string, bool)) (*Config, error) {
	doc, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("config: read: %w", err)
	}
	return decode(doc, env)
}

// decode is the defaults, the document, the environment, the secret files,
// then Validate.
func decode(doc []byte, env func(string) (string, bool)) (*Config, error) {
	c := Default()
	c.set = map[string]bool{}
	if err := checkValueKinds(doc, c.set); err != nil {
		return nil, err
	}
	dec := toml.NewDecoder(bytes.NewReader(doc)).DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, decodeError(err)
	}
	if err := c.applyEnv(env); err != nil {
		return nil, err
	}
	if err := c.readSecretFiles(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// EffectiveLookup returns [lookup] with its empty fields filled from [source].
func (c *Config) EffectiveLookup() LookupConfig {
	l := c.Lookup
	if l.Addr == "" {
		l.Addr = c.Source.Addr
	}
	if l.User == "" {
		l.User = c.Source.User
		if l.Password == "" {
			l.Password = c.Source.Password
		}
	}
	if l.Database == "" {
		l.Database = c.Source.Database
	}
	return l
}

// isSet reports whether the file or the environment set key.
func (c *Config) isSet(key string) bool {
	_, env := c.origin[key]
	return env || c.set[key]
}

// name returns the TOML key, plus the environment variable when the value
// came from one: `source.server_id (from DIALSYNC_SOURCE_SERVER_ID)`.
func (c *Config) name(key string) string {
	if v, ok := c.origin[key]; ok {
		return key + " (from " + v + ")"
	}
	return key
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
