package canal

import (
	"context"
	"dialsync/change"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"time"

	gocanal "github.com/go-mysql-org/go-mysql/canal"
	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/internal/myconn"
)

// Stream reads the binlog from `from` and calls h synchronously for every
// transaction, in commit order. `from` is used by GTID set when that is
// non-empty, else by File/Pos (Pos < 4 means 4; an empty File means the
// oldest binlog on the server).
//
// Every transaction is handed over, including those whose rows all belonged
// to untracked tables and DDL (Changes empty), so that a checkpoint can
// advance past them. A transaction larger than cfg.MaxTxnBytes arrives as
// pieces with Partial set, then a final piece. If the stream ends between
// the pieces of one transaction, a restart hands that transaction over again
// from piece 0: the apply side's effects must be idempotent.
//
// Txn.End carries both file/pos and the GTID set. For MariaDB the set is
// known from the first transaction even when starting by file/pos (seeded
// with BINLOG_GTID_POS); for MySQL started by file/pos it stays empty.
//
// Stream returns nil when ctx is cancelled. Errors that a retry cannot fix
// wrap ErrFatal; an error returned by h is returned (wrapped) as is; any
// other error (a lost connection, for example) is transient.
func Stream(ctx context.Context, cfg Config, from change.Position, h func(context.Context, *change.Txn) error) error {
	return stream(ctx, cfg, from, h, nil)
}

// Backoff bounds for Run's restarts.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Run supervises Stream: after a transient error it logs, waits (exponential
// backoff with jitter, 100ms to 10s, reset after progress) and streams again
// from the position after the last transaction h accepted, so within one
// process no transaction is lost or handed over twice (pieces of a
// transaction cut off mid-way excepted, see Stream). It returns nil when ctx
// is done, a fatal error (errors.Is(err, ErrFatal)), or an error h returned.
func Run(ctx context.Context, cfg Config, from change.Position, h func(context.Context, *change.Txn) error) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("component", "canal")
	pos := from
	backoff := minBackoff
	for {
		progressed := false
		err := stream(ctx, cfg, pos, h, func(p change.Position) { pos, progressed = p, true })
		if err == nil || ctx.Err() != nil {
			return nil
		}
		var he *handlerError
		if errors.Is(err, ErrFatal) || errors.As(err, &he) {
			return err
		}
		if progressed {
			backoff = minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("binlog stream interrupted; restarting", "error", err, "from", pos.String(), "after", wait)
		if cfg.OnRestart != nil {
			cfg.OnRestart(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Head returns the source's current binlog position: file/pos from SHOW
// MASTER STATUS (or its newer names) and the GTID set at exactly that
// position (MariaDB: BINLOG_GTID_POS of it; MySQL: the same row's
// Executed_Gtid_Set), so both halves name the same point.
func Head(ctx context.Context, cfg Config) (change.Position, error) {
	cfg = cfg.withDefaults()
	if cfg.Addr == "" {
		return change.Position{}, fatalf("head: config: Addr is empty")
	}
	if cfg.Flavor != mysql.MySQLFlavor && cfg.Flavor != mysql.MariaDBFlavor {
		return change.Position{}, fatalf("head: config: Flavor %q must be %q or %q", cfg.Flavor, mysql.MySQLFlavor, mysql.MariaDBFlavor)
	}
	conn, err := connect(ctx, cfg)
	if err != nil {
		return change.Position{}, fmt.Errorf("head: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	// A start position is only useful if streaming from it can work: check
	// the source now, so a bootstrap fails before it reconciles anything
	// and stores a checkpoint.
	if _, err := checkSource(cfg, conn); err != nil {
		return change.Position{}, fmt.Errorf("head: %w", err)
	}
	q := showBinlogStatusQuery(cfg.Flavor, conn.GetServerVersion())
	r, err := conn.Execute(q)
	if err != nil {
		return change.Position{}, fmt.Errorf("head: %s: %w", q, privileges(cfg, err))
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return change.Position{}, fatalf("head: %s returned nothing: binary logging is off on the source (enable log_bin)", q)
	}
	file, _ := r.GetString(0, 0)
	off, _ := r.GetUint(0, 1)
	p := change.Position{File: strings.Clone(file), Pos: uint32(off)}
	if cfg.Flavor == mysql.MariaDBFlavor {
		p.GTIDSet, err = binlogGTIDPos(conn, p.File, p.Pos)
		if err != nil {
			return change.Position{}, fmt.Errorf("head: %w", err)
		}
		return p, nil
	}
	if r.ColumnNumber() >= 5 {
		raw, _ := r.GetString(0, 4)
		gs, err := mysql.ParseGTIDSet(cfg.Flavor, strings.ReplaceAll(raw, "\n", ""))
		if err != nil {
			return change.Position{}, fmt.Errorf("head: parse Executed_Gtid_Set %q: %w", raw, err)
		}
		p.GTIDSet = gs.String()
	}
	return p, nil
}

func stream(ctx context.Context, cfg Config, from change.Position, h func(context.Context, *change.Txn) error, accepted func(change.Position)) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fatalf("%w", err)
	}
	log := cfg.Logger.With("component", "canal")
	if from.Pos < 4 {
		from.Pos = 4
	}
	gset, err := parseStartGTID(cfg.Flavor, from.GTIDSet)
	if err != nil {
		return err
	}

	pf, err := preflight(ctx, cfg, &from, gset == nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	c, err := gocanal.NewCanal(canalConfig(ctx, cfg, pf.fillZeroLogPos))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("create canal: %w", err)
	}
	var closeOnce sync.Once
	closeCanal := func() { closeOnce.Do(c.Close) }
	defer closeCanal()
	stop := context.AfterFunc(ctx, closeCanal)
	defer stop()

	s := newStreamer(ctx, cfg, log, c, from, h, accepted)
	if cfg.Flavor == mysql.MariaDBFlavor && gset == nil && pf.gtidSeed != nil {
		// go-mysql tracks GTIDs only when started from a GTID set; track
		// them ourselves so that End.GTIDSet is filled from the first
		// transaction on (MariaDB positions are one GTID per domain, so the
		// seed plus every GTID seen is exact).
		seed, err := mysql.ParseMariadbGTIDSet(*pf.gtidSeed)
		if err != nil {
			return fmt.Errorf("parse BINLOG_GTID_POS result %q: %w", *pf.gtidSeed, err)
		}
		s.tracker = seed.(*mysql.MariadbGTIDSet)
	}
	if err := s.loadTables(); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.SetEventHandler(s)

	log.Info("binlog stream starting", "from", from.String(), "server", pf.version, "server_id", cfg.ServerID, "tables", len(cfg.Tables))
	ask := from
	if cfg.askFrom != nil {
		ask = *cfg.askFrom
		if gset, err = parseStartGTID(cfg.Flavor, ask.GTIDSet); err != nil {
			return err
		}
	}
	if gset != nil {
		err = c.StartFromGTID(gset)
	} else {
		err = c.RunFrom(mysql.Position{Name: ask.File, Pos: ask.Pos})
	}
	s.logReplayed()
	if ctx.Err() != nil {
		return nil
	}
	if s.err != nil {
		return s.err
	}
	if err == nil {
		return fmt.Errorf("binlog stream after %s ended without an error", s.last)
	}
	return classify(cfg, fmt.Errorf("binlog stream after %s: %w", s.last, err))
}

// parseStartGTID parses a start position's GTID set; nil for "". A set
// that does not parse is fatal: it came from a damaged checkpoint, and
// retrying cannot mend it.
func parseStartGTID(flavor, text string) (mysql.GTIDSet, error) {
	if text == "" {
		return nil, nil
	}
	set, err := mysql.ParseGTIDSet(flavor, text)
	if err != nil {
		// go-mysql's message quotes the text; keep the whole error on one line.
		return nil, fatalf("start position: invalid %s GTID set %q (%s): %s", flavor, text,
			strings.Join(strings.Fields(err.Error()), " "), positionHint)
	}
	if set.String() == "" {
		// go-mysql parses "," (MariaDB) to an empty set, and starting from
		// an empty set silently falls back to the oldest binlog without
		// GTID tracking (docs/canal.md, "Start position rules").
		return nil, fatalf("start position: %s GTID set %q names no transaction: %s", flavor, text, positionHint)
	}
	return set, nil
}

// canalConfig is go-mysql's configuration; ctx is the stream's: every
// connection canal makes is closed when it ends (myconn.Dialer).
func canalConfig(ctx context.Context, cfg Config, fillZeroLogPos bool) *gocanal.Config {
	include := make([]string, 0, len(cfg.Tables))
	for _, t := range cfg.Tables {
		// go-mysql matches these unanchored against "db.table".
		include = append(include, "^"+regexp.QuoteMeta(cfg.Database)+`\.`+regexp.QuoteMeta(t.Table)+"$")
	}
	if len(include) == 0 {
		// An empty list would include every table; "^$" matches none.
		include = []string{"^$"}
	}
	return &gocanal.Config{
		Addr:     cfg.Addr,
		User:     cfg.User,
		Password: cfg.Password,
		Flavor:   cfg.Flavor,
		ServerID: cfg.ServerID,
		// Heartbeats well below the read timeout detect a half-open TCP
		// connection (go-mysql issue #82).
		HeartbeatPeriod:   cfg.HeartbeatPeriod,
		ReadTimeout:       cfg.ReadTimeout,
		IncludeTableRegex: include,
		// true would drop rows silently on a transient schema-fetch error.
		DiscardNoMetaRowEvent: false,
		// No mysqldump: it needs a global read lock that RDS refuses; the
		// bootstrap reconciles instead.
		Dump:                    gocanal.DumpConfig{ExecutionPath: ""},
		ParseTime:               true,
		TimestampStringLocation: time.UTC,
		// A Canal is single-use after Run returns; Run (ours) rebuilds it
		// from the last accepted position, with backoff.
		DisableRetrySync: true,
		TLSConfig:        cfg.TLS,
		Logger:           goMySQLLogger(ctx, cfg.Logger),
		// go-mysql bounds only the dial of its connections, not their
		// handshake, and never looks at our ctx (docs/design.md, "Deadlines
		// and signals").
		Dialer:          myconn.Dialer(ctx),
		Localhost:       "dialsync",
		EventCacheCount: cfg.EventBuffer,
		// MariaDB >= 11.4 writes LogPos 0 inside transactions (go-mysql
		// issues #901/#1035); positions must be computed from event sizes.
		FillZeroLogPos: fillZeroLogPos,
	}
}

type preflightResult struct {
	version        string
	fillZeroLogPos bool
	gtidSeed       *string // MariaDB GTID position at `from` (file/pos starts only)
}

// preflight checks what go-mysql does not (or not for every flavor) and
// resolves an empty start file. Its complaints name the variable and the fix.
func preflight(ctx context.Context, cfg Config, from *change.Position, byFilePos bool) (preflightResult, error) {
	var res preflightResult
	conn, err := connect(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("preflight: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	res.version = conn.GetServerVersion()
	if res.fillZeroLogPos, err = checkSource(cfg, conn); err != nil {
		return res, err
	}
	if !byFilePos {
		return res, nil
	}
	if err := resolveStartFile(cfg, conn, from); err != nil {
		return res, err
	}
	if cfg.Flavor == mysql.MariaDBFlavor {
		gs, err := binlogGTIDPos(conn, from.File, from.Pos)
		if err != nil {
			cfg.Logger.Warn("cannot map the start file/pos to a GTID position; End.GTIDSet stays empty until the next restart", "from", from.String(), "error", err)
		} else {
			res.gtidSeed = &gs
		}
	}
	return res, nil
}

// binlogGTIDPos asks MariaDB for the GTID position at file/pos.
func binlogGTIDPos(conn *client.Conn, file string, pos uint32) (string, error) {
	r, err := conn.Execute("SELECT BINLOG_GTID_POS(?, ?)", file, pos)
	if err != nil {
		return "", fmt.Errorf("BINLOG_GTID_POS(%s, %d): %w", file, pos, err)
	}
	defer r.Close()
	v, err := r.GetValue(0, 0)
	if err != nil {
		return "", fmt.Errorf("BINLOG_GTID_POS(%s, %d): %w", file, pos, err)
	}
	if v == nil {
		return "", fmt.Errorf("BINLOG_GTID_POS(%s, %d) is NULL: no such binlog file or offset", file, pos)
	}
	s, _ := r.GetString(0, 0)
	return strings.Clone(s), nil
}

// connect opens a query connection (preflight, Head): the connect is
// bounded by ctx and myconn.HandshakeTimeout, each read and write by
// cfg.ReadTimeout; callers close it when ctx ends.
func connect(ctx context.Context, cfg Config) (*client.Conn, error) {
	opts := []client.Option{func(c *client.Conn) error {
		c.ReadTimeout, c.WriteTimeout = cfg.ReadTimeout, cfg.ReadTimeout
		return nil
	}}
	if cfg.TLS != nil {
		opts = append(opts, func(c *client.Conn) error { c.SetTLSConfig(cfg.TLS); return nil })
	}
	c, err := myconn.Connect(ctx, cfg.Addr, cfg.User, cfg.Password, "", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Addr, err)
	}
	return c, nil
}

func checkFlavor(cfg Config, version string) error {
	isMariaDB := strings.Contains(strings.ToLower(version), "mariadb")
	if isMariaDB != (cfg.Flavor == mysql.MariaDBFlavor) {
		return fatalf("source %s runs %s but Flavor is %q: set Flavor to %q", cfg.Addr, version, cfg.Flavor,
			map[bool]string{true: mysql.MariaDBFlavor, false: mysql.MySQLFlavor}[isMariaDB])
	}
	return nil
}

// showBinlogStatusQuery follows the renames of SHOW MASTER STATUS
// (MySQL 8.4 dropped the old name; MariaDB 10.5.2 added the new one).
func showBinlogStatusQuery(flavor, version string) string {
	if flavor == mysql.MySQLFlavor {
		if cmp, err := mysql.CompareServerVersions(version, "8.4.0"); err == nil && cmp >= 0 {
			return "SHOW BINARY LOG STATUS"
		}
	}
	return "SHOW MASTER STATUS"
}
