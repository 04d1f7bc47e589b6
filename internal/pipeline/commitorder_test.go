package pipeline

import "testing"

// TestCommitOrder: MySQL commits in binlog order when binlog_order_commits
// is ON; MariaDB, which has no such variable, always does (its group
// commit, see TestMariaDBCommitsInBinlogOrder in internal/lookup).
func TestCommitOrder(t *testing.T) {
	for _, c := range []struct {
		vars             map[string]string
		ordered, mariadb bool
	}{
		{map[string]string{"binlog_order_commits": "ON", "version": "8.0.36"}, true, false},
		{map[string]string{"binlog_order_commits": "OFF", "version": "8.0.36"}, false, false},
		{map[string]string{"version": "10.11.19-MariaDB-0+deb12u1-log"}, true, true},
		{map[string]string{"version": "8.0.36"}, false, false}, // neither: the safe fallback
		{map[string]string{}, false, false},
	} {
		if o, m := commitOrder(c.vars); o != c.ordered || m != c.mariadb {
			t.Errorf("commitOrder(%v) = %v, %v; want %v, %v", c.vars, o, m, c.ordered, c.mariadb)
		}
	}
}
