package preflight

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// Grant is one parsed line of SHOW GRANTS: privileges on an object.
type Grant struct {
	Privs  []string // upper case; "ALL" for ALL [PRIVILEGES]
	DB     string   // "*" for *.*
	Table  string   // "*" for db.*
	Role   string   // set (and the rest empty) for "GRANT role TO user"
	Source string
}

var (
	grantOn   = regexp.MustCompile(`(?i)^GRANT\s+(.+?)\s+ON\s+(?:TABLE\s+)?(\S+)\s+TO\s`)
	grantRole = regexp.MustCompile("(?i)^GRANT\\s+([`'\"\\w@%.,\\s-]+?)\\s+TO\\s")
)

// ParseGrant parses one SHOW GRANTS line; ok is false for lines that are
// neither a privilege nor a role grant (PROXY, procedures).
func ParseGrant(line string) (g Grant, ok bool) {
	g.Source = line
	if m := grantOn.FindStringSubmatch(line); m != nil {
		privs, obj := m[1], m[2]
		if strings.HasPrefix(strings.ToUpper(privs), "PROXY") || strings.Contains(strings.ToUpper(obj), "PROCEDURE") {
			return g, false
		}
		db, table, _ := strings.Cut(obj, ".")
		g.DB, g.Table = unquoteIdent(db), unquoteIdent(table)
		for _, p := range splitTop(privs) {
			p = strings.ToUpper(strings.TrimSpace(p))
			if i := strings.Index(p, "("); i >= 0 { // column grant: SELECT (a, b)
				p = strings.TrimSpace(p[:i])
			}
			if p == "ALL PRIVILEGES" {
				p = "ALL"
			}
			g.Privs = append(g.Privs, p)
		}
		return g, true
	}
	if m := grantRole.FindStringSubmatch(line); m != nil {
		g.Role = strings.TrimSpace(m[1])
		return g, true
	}
	return g, false
}

// splitTop splits on commas outside parentheses.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func unquoteIdent(s string) string {
	s = strings.Trim(s, "`'\"")
	// SHOW GRANTS prints a database name written with wildcards escaped.
	return strings.ReplaceAll(s, `\_`, "_")
}

// writePrivs are the privileges that can change data or schema; any of
// them on the source database (or globally) is more than dialsync needs.
var writePrivs = []string{"INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX", "TRIGGER",
	"CREATE VIEW", "CREATE ROUTINE", "ALTER ROUTINE", "EVENT", "DELETE HISTORY", "LOCK TABLES", "REFERENCES", "FILE"}

// GrantNeeds says what the account must and must not hold.
type GrantNeeds struct {
	MariaDB  bool // MariaDB >= 10.5.2: REPLICATION CLIENT is called BINLOG MONITOR
	Database string
	Tables   []string
	Account  string // for the fix text: `user`@`host`
}

// JudgeGrants decides the grants check from SHOW GRANTS lines: enough is
// REPLICATION SLAVE + (REPLICATION CLIENT | BINLOG MONITOR) on *.* and
// SELECT on every tracked table (globally, on the database or per
// table); more than needed (WARN) is ALL PRIVILEGES, SUPER or a write
// privilege on the database. Privileges that come through roles are not
// expanded (SHOW GRANTS does not list them).
func JudgeGrants(lines []string, n GrantNeeds) Result {
	const name = "grants"
	global := map[string]bool{}
	onDB := map[string]bool{}
	onTable := map[string]map[string]bool{}
	var roles []string
	for _, l := range lines {
		g, ok := ParseGrant(l)
		if !ok {
			continue
		}
		if g.Role != "" {
			roles = append(roles, g.Role)
			continue
		}
		var set map[string]bool
		switch {
		case g.DB == "*":
			set = global
		case !strings.EqualFold(g.DB, n.Database):
			continue
		case g.Table == "*":
			set = onDB
		default:
			t := strings.ToLower(g.Table)
			if onTable[t] == nil {
				onTable[t] = map[string]bool{}
			}
			set = onTable[t]
		}
		for _, p := range g.Privs {
			set[p] = true
		}
	}
	has := func(set map[string]bool, p string) bool { return set[p] || set["ALL"] }
	client := "REPLICATION CLIENT"
	if n.MariaDB {
		client = "BINLOG MONITOR"
	}
	var missing []string
	if !has(global, "REPLICATION SLAVE") && !has(global, "REPLICATION REPLICA") {
		missing = append(missing, "REPLICATION SLAVE")
	}
	if !has(global, "REPLICATION CLIENT") && !has(global, "BINLOG MONITOR") {
		missing = append(missing, client)
	}
	var noSelect []string
	for _, t := range n.Tables {
		if !has(global, "SELECT") && !has(onDB, "SELECT") && !has(onTable[strings.ToLower(t)], "SELECT") {
			noSelect = append(noSelect, t)
		}
	}
	account := n.Account
	if account == "" {
		account = "the dialsync user"
	}
	if len(missing) > 0 || len(noSelect) > 0 {
		var fix []string
		detail := []string{}
		if len(missing) > 0 {
			fix = append(fix, fmt.Sprintf("GRANT %s ON *.* TO %s;", strings.Join(missing, ", "), account))
			detail = append(detail, "missing "+strings.Join(missing, ", ")+" on *.*")
		}
		if len(noSelect) > 0 {
			fix = append(fix, fmt.Sprintf("GRANT SELECT ON `%s`.* TO %s;", n.Database, account))
			detail = append(detail, fmt.Sprintf("no SELECT on %s.{%s}", n.Database, strings.Join(noSelect, ",")))
		}
		d := strings.Join(detail, "; ")
		if len(roles) > 0 {
			d += fmt.Sprintf(" (privileges of roles %s are not expanded here)", strings.Join(roles, ", "))
		}
		return fail(name, strings.Join(fix, " "), "%s", d)
	}
	var extra []string
	if global["ALL"] {
		extra = append(extra, "ALL PRIVILEGES on *.*")
	} else if global["SUPER"] {
		extra = append(extra, "SUPER")
	}
	for _, p := range writePrivs {
		switch {
		case global["ALL"]:
		case global[p]:
			extra = append(extra, p+" on *.*")
		case onDB[p] || onDB["ALL"]:
			extra = append(extra, p+" on "+n.Database+".*")
		default:
			for _, t := range slices.Sorted(maps.Keys(onTable)) {
				if set := onTable[t]; set[p] || set["ALL"] {
					extra = append(extra, p+" on "+n.Database+"."+t)
				}
			}
		}
	}
	if len(extra) > 0 {
		return warn(name, fmt.Sprintf("use a least-privilege account: GRANT REPLICATION SLAVE, %s ON *.* TO %s; GRANT SELECT ON `%s`.* TO %s; (and REVOKE the rest)", client, account, n.Database, account),
			"enough, but more than dialsync needs: %s", strings.Join(extra, ", "))
	}
	return ok(name, "REPLICATION SLAVE, %s and SELECT on the tracked tables, nothing more", client)
}

func (s *Source) checkGrants(ctx context.Context, version string, in SourceInput) Result {
	rows, err := s.Query(ctx, "SHOW GRANTS FOR CURRENT_USER()")
	if err != nil {
		return fail("grants", "check source.user", "cannot read the account's grants: %v", err)
	}
	var lines []string
	for _, r := range rows {
		for _, v := range r { // one column, named "Grants for user@host"
			lines = append(lines, v)
		}
	}
	account := ""
	if rows, err := s.Query(ctx, "SELECT CURRENT_USER() AS u"); err == nil && len(rows) == 1 {
		if u, h, ok := strings.Cut(rows[0]["u"], "@"); ok {
			account = fmt.Sprintf("'%s'@'%s'", u, h)
		}
	}
	tables := make([]string, len(in.Tables))
	for i, t := range in.Tables {
		tables[i] = t.Table
	}
	return JudgeGrants(lines, GrantNeeds{
		MariaDB:  IsMariaDB(version) && atLeast(version, "10.5.2"),
		Database: in.Database, Tables: tables, Account: account,
	})
}
