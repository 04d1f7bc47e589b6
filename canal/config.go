package canal

import (
	"crypto/tls"
	"dialsync/change"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// Config says where to read the binlog and what to decode.
type Config struct {
	// Addr is the source's "host:port".
	Addr string
	// User and Password authenticate as a replication client (REPLICATION
	// SLAVE, REPLICATION CLIENT / BINLOG MONITOR, SELECT on the tables).
	User, Password string
	// Flavor is "mysql" or "mariadb"; it must match the server.
	Flavor string
	// ServerID is the replica id this reader registers with; required,
	// non-zero and unique among the source's replicas (a duplicate makes the
	// server drop one of the two connections).
	ServerID uint32
	// Database is the source schema; only its tables listed in Tables are
	// decoded.
	Database string
	// Tables are the tracked tables and the columns wanted from each.
	Tables []change.TableSpec
	// HeartbeatPeriod asks the server for heartbeats when idle so that a
	// half-open connection is noticed; zero means 10s.
	HeartbeatPeriod time.Duration
	// ReadTimeout ends a connection that stays silent this long; zero means
	// 90s (servers may beat every 30s whatever period is asked for). It must
	// exceed HeartbeatPeriod.
	ReadTimeout time.Duration
	// MaxTxnBytes bounds the memory a buffered transaction may hold: beyond
	// it the transaction is handed on in pieces (Txn.Partial). Zero means
	// 2 MiB.
	MaxTxnBytes int
	// EventBuffer is the number of decoded binlog events queued between the
	// network reader and the handler (go-mysql counts events, not bytes: a
	// rows event is up to about 8 KiB on the wire and several times that
	// decoded, every column boxed). Zero means 64: enough for the decoder to
	// run ahead, while 512 held tens of MiB during a catch-up and kept the
	// garbage collector busy (profiled with make bench -profile).
	EventBuffer int
	// TLS, when set, encrypts the connections to the source.
	TLS *tls.Config
	// Logger receives this package's logs and go-mysql's; nil means
	// slog.Default().
	Logger *slog.Logger
	// OnRestart, when set, is called each time Run restarts the stream
	// after a transient error (a lost connection, mostly).
	OnRestart func(err error)

	// askFrom, when set, is the position the server is asked to send
	// from, instead of the start position: tests use an earlier one to
	// play a server that resends old transactions (replay.go).
	askFrom *change.Position
}

const (
	defaultHeartbeat   = 10 * time.Second
	defaultReadTimeout = 90 * time.Second
	defaultMaxTxnBytes = 2 << 20
	defaultEventBuffer = 64
)

func (c Config) withDefaults() Config {
	if c.HeartbeatPeriod == 0 {
		c.HeartbeatPeriod = defaultHeartbeat
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = defaultReadTimeout
	}
	if c.MaxTxnBytes == 0 {
		c.MaxTxnBytes = defaultMaxTxnBytes
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = defaultEventBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports the first bad field by name.
func (c Config) validate() error {
	switch {
	case c.Addr == "":
		return errors.New("config: Addr is empty")
	case c.Flavor != mysql.MySQLFlavor && c.Flavor != mysql.MariaDBFlavor:
		return fmt.Errorf("config: Flavor %q must be %q or %q", c.Flavor, mysql.MySQLFlavor, mysql.MariaDBFlavor)
	case c.ServerID == 0:
		return errors.New("config: ServerID must be non-zero and unique among the source's replicas")
	case c.Database == "":
		return errors.New("config: Database is empty")
	case c.ReadTimeout <= c.HeartbeatPeriod:
		return fmt.Errorf("config: ReadTimeout %s must exceed HeartbeatPeriod %s", c.ReadTimeout, c.HeartbeatPeriod)
	case c.MaxTxnBytes < 0:
		return errors.New("config: MaxTxnBytes is negative")
	}
	seen := map[string]bool{}
	for i, t := range c.Tables {
		if t.Table == "" {
			return fmt.Errorf("config: Tables[%d].Table is empty", i)
		}
		if seen[t.Table] {
			return fmt.Errorf("config: table %q listed twice", t.Table)
		}
		seen[t.Table] = true
	}
	return nil
}
