package canal

import (
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
)

// Statement events.
//
// With binlog_format = ROW every row change reaches us as a rows event. But
// the format is a session variable: any session may run
// `SET SESSION binlog_format = 'STATEMENT'` (or MIXED, where the server picks
// per statement), and `SET GLOBAL` changes it for every new session while we
// stream. Such a change arrives as a query event holding the SQL text, which
// go-mysql parses only to find DDL: a DML statement produces no callback but
// OnPosSynced (go-mysql canal/sync.go, QueryEvent case), so without this
// guard the checkpoint would move past a change that was never applied.
//
// OnPosSynced gets only the event header, not the query, so for every query
// event that is not DDL (rare under ROW: COMMIT of non-transactional
// tables, account statements such as GRANT, ANALYZE TABLE ...) we read its
// text back from the server with SHOW BINLOG EVENTS (a read the binlog user
// may run: REPLICATION SLAVE on MySQL, BINLOG MONITOR on MariaDB), and stop
// if it is DML that may write a tracked table. The text is parsed, never
// logged: it may hold row values.

// errStatementDML is wrapped by the fatal error for a DML statement event on
// a tracked table.
var errStatementDML = fmt.Errorf("statement-based change to a tracked table")

// OnDDL marks the query event as DDL, so OnPosSynced does not examine it.
func (s *streamer) OnDDL(h *replication.EventHeader, _ mysql.Position, _ *replication.QueryEvent) error {
	s.ddlEnd = h.LogPos
	return nil
}

// checkStatement examines a query event ending at pos (header h) and says
// whether it ends a transaction. DDL and other statements do (go-mysql
// calls OnPosSynced after them); a DML statement does not: it sits between
// BEGIN and the XID (or COMMIT) that ends its transaction, and treating it
// as a boundary would store a position inside a transaction. A DML
// statement that may change a tracked table is a fatal error.
func (s *streamer) checkStatement(h *replication.EventHeader, pos mysql.Position) (boundary bool, err error) {
	if s.ddlEnd == h.LogPos && h.LogPos != 0 {
		return true, nil
	}
	start := h.LogPos - h.EventSize
	query, err := s.statementText(pos.Name, start)
	if err != nil {
		return false, fmt.Errorf("read the statement event at %s:%d back from the source (to see whether it changed a tracked table): %w", pos.Name, start, err)
	}
	if s.sqlParser == nil {
		s.sqlParser = parser.New()
	}
	tables, dml, inside, perr := statementTables(s.sqlParser, query)
	if perr != nil {
		// go-mysql parsed this statement already (else no OnPosSynced);
		// a failure here means we cannot tell: stop rather than guess.
		return false, fatalf("query event at %s:%d could not be parsed to tell whether it changed a tracked table (%v): %s",
			pos.Name, start, perr, statementFix)
	}
	if inside {
		// ROLLBACK TO SAVEPOINT: the transaction goes on.
		return false, nil
	}
	if !dml {
		return true, nil
	}
	for _, t := range tables {
		// No database: the session had none and named none; match by
		// table name alone rather than guess.
		if t.table == "" || ((t.db == "" || strings.EqualFold(t.db, s.cfg.Database)) && s.tables[t.table] != nil) {
			name := t.table
			if name == "" {
				name = "(a table the statement does not name plainly)"
			}
			return false, fatalf("%w %s.%s in a statement event at %s:%d (the writing session used binlog_format STATEMENT or MIXED): dialsync can apply only row events, so it stops before this change; %s",
				errStatementDML, s.cfg.Database, name, pos.Name, start, statementFix)
		}
	}
	return false, nil
}

const statementFix = FixFormat + "; make sure no session overrides it; then move the checkpoint past this event with 'dialsync checkpoint reset --to-head --reason \"statement-based change\"' (it reconciles the whole queue) and start dialsync again"

// statementText reads the query text of the event at file:pos. SHOW BINLOG
// EVENTS shows it as "use `db`; <query>" when the session had a default
// database; the prefix is parsed like the rest.
func (s *streamer) statementText(file string, pos uint32) (string, error) {
	// file passed checkPosition: no quote or backslash can end the literal.
	r, err := s.canal.Execute(fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %d LIMIT 1", file, pos))
	if err != nil {
		return "", privileges(s.cfg, err)
	}
	if r.RowNumber() == 0 {
		return "", fmt.Errorf("SHOW BINLOG EVENTS returned no event at %s:%d", file, pos)
	}
	typ, _ := r.GetStringByName(0, "Event_type")
	if !strings.EqualFold(typ, "Query") {
		return "", fmt.Errorf("the event at %s:%d is %q, not the query event the stream announced", file, pos, typ)
	}
	return r.GetStringByName(0, "Info")
}

type tableRef struct{ db, table string }

// statementTables parses a statement (with an optional "use `db`;" prefix)
// and reports whether it is DML and which tables it may write (for an
// UPDATE or DELETE with a join, every table of the join). A DML statement
// whose target cannot be named gets a ref with an empty table, which
// matches every tracked table. inside reports a ROLLBACK TO SAVEPOINT,
// which go-mysql announces like a commit although its transaction goes on.
func statementTables(p *parser.Parser, query string) (refs []tableRef, dml, inside bool, err error) {
	stmts, _, err := p.Parse(query, "", "")
	if err != nil {
		return nil, false, false, err
	}
	db := ""
	for _, st := range stmts {
		var targets []ast.ResultSetNode
		switch x := st.(type) {
		case *ast.UseStmt:
			db = x.DBName
			continue
		case *ast.RollbackStmt:
			inside = inside || x.SavepointName != ""
			continue
		case *ast.InsertStmt:
			targets = joinTables(x.Table)
		case *ast.UpdateStmt:
			targets = joinTables(x.TableRefs)
		case *ast.DeleteStmt:
			if x.Tables != nil {
				for _, t := range x.Tables.Tables {
					targets = append(targets, t)
				}
			}
			targets = append(targets, joinTables(x.TableRefs)...)
		case *ast.LoadDataStmt:
			if x.Table != nil {
				targets = append(targets, x.Table)
			}
		case *ast.NonTransactionalDMLStmt:
		default:
			continue
		}
		dml = true
		n := len(refs)
		for _, t := range targets {
			if tn, ok := t.(*ast.TableName); ok {
				d := tn.Schema.O
				if d == "" {
					d = db
				}
				refs = append(refs, tableRef{db: d, table: tn.Name.O})
			}
		}
		if len(refs) == n {
			refs = append(refs, tableRef{db: db})
		}
	}
	return refs, dml, inside, nil
}

// joinTables lists the table sources of a FROM/INTO clause.
func joinTables(c *ast.TableRefsClause) []ast.ResultSetNode {
	if c == nil {
		return nil
	}
	var out []ast.ResultSetNode
	var walk func(n ast.ResultSetNode)
	walk = func(n ast.ResultSetNode) {
		switch x := n.(type) {
		case *ast.Join:
			walk(x.Left)
			if x.Right != nil {
				walk(x.Right)
			}
		case *ast.TableSource:
			walk(x.Source)
		case *ast.TableName:
			out = append(out, x)
		}
	}
	walk(c.TableRefs)
	return out
}
