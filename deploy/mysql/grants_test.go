// Package mysql_test runs deploy/mysql/grants.sql against a real MariaDB and
// proves the account it creates can do what dialsync needs and nothing more.
package mysql_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/client"
)

func mysqlAddr() string {
	if a := os.Getenv("DIALSYNC_TEST_MYSQL_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:3306"
}

func connect(tb testing.TB, user, password, db string) *client.Conn {
	tb.Helper()
	c, err := client.Connect(mysqlAddr(), user, password, db)
	if err != nil {
		tb.Fatalf("connect %s as %s: %v", mysqlAddr(), user, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// statements splits SQL text into statements, dropping "--" comments.
func statements(sql string) []string {
	var b strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line + "\n")
	}
	var out []string
	for _, s := range strings.Split(b.String(), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// variant returns grants.sql for one block: the MySQL one as shipped, or the
// commented MariaDB one uncommented, with the schema and user renamed for
// this test and REQUIRE SSL removed (the test server has no TLS).
func variant(tb testing.TB, mariadb bool, db, user string) []string {
	tb.Helper()
	raw, err := os.ReadFile("grants.sql")
	if err != nil {
		tb.Fatal(err)
	}
	sql := string(raw)
	if mariadb {
		start := strings.Index(sql, "-- MariaDB 10.5+")
		end := strings.Index(sql, "-- MariaDB before 10.5")
		if start < 0 || end < start {
			tb.Fatal("grants.sql: MariaDB block not found")
		}
		block := sql[start:end]
		block = regexp.MustCompile(`(?m)^-- ((?:CREATE|GRANT|  ).*)$`).ReplaceAllString(block, "$1")
		sql = block
	}
	sql = strings.ReplaceAll(sql, "`laravel`", "`"+db+"`")
	sql = strings.ReplaceAll(sql, "'dialsync'@'%'", "'"+user+"'@'%'")
	sql = strings.ReplaceAll(sql, "REQUIRE SSL", "")
	stmts := statements(sql)
	if len(stmts) != 7 {
		tb.Fatalf("grants.sql (mariadb=%v): %d statements, want 7: %q", mariadb, len(stmts), stmts)
	}
	return stmts
}

func TestGrants(t *testing.T) {
	for _, mariadb := range []bool{false, true} {
		name := "mysql_block"
		if mariadb {
			name = "mariadb_block"
		}
		t.Run(name, func(t *testing.T) {
			db := "deploy_grants_" + name
			user := "t_grants_" + name
			root := connect(t, "root", "", "")
			exec := func(q string) {
				t.Helper()
				if _, err := root.Execute(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			exec("DROP DATABASE IF EXISTS `" + db + "`")
			exec("DROP USER IF EXISTS '" + user + "'@'%'")
			t.Cleanup(func() {
				_, _ = root.Execute("DROP DATABASE IF EXISTS `" + db + "`")
				_, _ = root.Execute("DROP USER IF EXISTS '" + user + "'@'%'")
			})
			exec("CREATE DATABASE `" + db + "`")
			for _, tbl := range []string{"users", "user_addresses", "claims", "claim_requirements", "claim_vehicle_packages", "other_table"} {
				exec("CREATE TABLE `" + db + "`.`" + tbl + "` (id BIGINT UNSIGNED PRIMARY KEY)")
			}
			exec("INSERT INTO `" + db + "`.users VALUES (1)")
			for _, s := range variant(t, mariadb, db, user) {
				exec(s)
			}

			c := connect(t, user, "change-me", db)
			allowed := []string{
				"SHOW MASTER STATUS", // REPLICATION CLIENT / BINLOG MONITOR
				"SELECT id FROM users WHERE id IN (1)",
				"SELECT COUNT(*) FROM claim_vehicle_packages",
				"SHOW FULL COLUMNS FROM claims", // canal's table metadata
				"SHOW INDEX FROM claim_requirements",
				"SELECT @@server_id, @@binlog_format",
			}
			for _, q := range allowed {
				if _, err := c.Execute(q); err != nil {
					t.Errorf("%s: %v (the account lacks a privilege dialsync needs)", q, err)
				}
			}
			denied := []string{
				"SELECT * FROM other_table",
				"INSERT INTO users VALUES (2)",
				"UPDATE users SET id = 3",
				"DELETE FROM claims",
				"CREATE TABLE x (id INT)",
				"SELECT * FROM mysql.user",
			}
			for _, q := range denied {
				_, err := c.Execute(q)
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), "denied") {
					t.Errorf("%s: got %v, want access denied (least privilege)", q, err)
				}
			}

			// The grants are exactly replication plus SELECT on the five tables.
			r, err := root.Execute("SHOW GRANTS FOR '" + user + "'@'%'")
			if err != nil {
				t.Fatal(err)
			}
			var grants []string
			for i := range r.RowNumber() {
				g, _ := r.GetString(i, 0)
				grants = append(grants, g)
			}
			all := strings.Join(grants, "\n")
			if len(grants) != 6 || !strings.Contains(all, "REPLICATION SLAVE") || strings.Contains(all, "ALL PRIVILEGES") {
				t.Errorf("unexpected grants:\n%s", all)
			}
		})
	}
}
