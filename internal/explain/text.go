package explain

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the report for a human.
func WriteText(w io.Writer, r *Report) error {
	b := &strings.Builder{}
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }

	verdict := "NOT QUEUED"
	if r.Rule.Queued {
		verdict = "QUEUED"
	}
	p("user %d: %s (%s rule)\n", r.UserID, verdict, r.Rule.Rule)

	p("\nsource:\n")
	if r.User == nil {
		p("  not found: no users row with id %d\n", r.UserID)
	} else {
		u := r.User
		tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  exists\tyes\n")
		fmt.Fprintf(tw, "  soft-deleted\t%s\n", yesNo(u.SoftDeleted))
		fmt.Fprintf(tw, "  enabled\t%s (is_enabled = %s)\n", yesNo(u.Enabled), intOrNull(u.IsEnabled))
		fmt.Fprintf(tw, "  status\t%s\n", strOrNull(u.Status))
		fmt.Fprintf(tw, "  phone\t%s\n", present(u.PhonePresent))
		tw.Flush()
	}
	if r.ClaimsTotal > 0 {
		p("\nclaims (%d", r.ClaimsTotal)
		if len(r.Claims) < r.ClaimsTotal {
			p(", first %d shown", len(r.Claims))
		}
		p("; open = not soft-deleted and status not closed/rejected/paid):\n")
		tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  claim\tstatus\tsoft-deleted\topen\trequirements\tpending\toldest pending\n")
		for _, c := range r.Claims {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%s\n", c.ID, strOrNull(c.Status), yesNo(c.SoftDeleted), yesNo(c.Open),
				c.Requirements, c.PendingRequirements, timeOr(c.OldestPendingAt, "-"))
		}
		tw.Flush()
	} else if r.Found {
		p("\nclaims: none\n")
	}

	p("\nrule (%s):\n", r.Rule.Rule)
	if len(r.Rule.Clauses) > 0 {
		tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
		for _, c := range r.Rule.Clauses {
			mark := "pass"
			if !c.Pass {
				mark = "FAIL"
			}
			fmt.Fprintf(tw, "  [%s]\t%s\t%s\n", mark, c.Name, c.SQL)
		}
		tw.Flush()
	}
	if len(r.Rule.Failing) > 0 {
		p("  verdict: not queued, failing: %s\n", strings.Join(r.Rule.Failing, ", "))
	} else {
		p("  verdict: %s\n", strings.ToLower(verdict))
	}
	if r.Rule.Row != nil {
		p("  the rule computes: %s\n", rowText(r.Rule.Row))
	}
	if r.Rule.Note != "" {
		p("  note: %s\n", r.Rule.Note)
	}

	p("\ncall_queue:\n")
	switch {
	case r.Queue.Error != "":
		p("  ERROR: %s\n", r.Queue.Error)
	default:
		if r.Queue.Row == nil {
			p("  row: none\n")
		} else {
			p("  row: %s entered_at=%s updated_at=%s\n", rowText(r.Queue.Row),
				timeOr(r.Queue.Row.EnteredAt, "none"), timeOr(r.Queue.Row.UpdatedAt, "none"))
		}
		if r.Queue.Agrees {
			p("  agrees with the rule: yes\n")
		} else {
			p("  agrees with the rule: NO, DRIFT: %s\n", r.Queue.Drift)
			p("  (transient if dialsync is running and has not applied the latest change yet; " +
				"otherwise a bug or an outside writer: `dialsync reconcile` repairs it)\n")
		}
	}

	p("\nredis keys:\n")
	switch {
	case r.Cache.Error != "":
		p("  ERROR: %s\n", r.Cache.Error)
	case len(r.Cache.Keys) == 0:
		p("  none configured\n")
	default:
		tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
		for _, k := range r.Cache.Keys {
			state := "missing"
			if k.Exists {
				state = "exists"
			}
			fmt.Fprintf(tw, "  %s\t%s\t(%s key)\n", k.Key, state, k.Scope)
		}
		tw.Flush()
	}

	p("\nnotices")
	switch {
	case r.Notices.Error != "":
		p(":\n  ERROR: %s\n", r.Notices.Error)
	case r.Notices.Filter == "":
		p(": not read\n")
	default:
		p(" (last %d of %d on %s in stream %s):\n", len(r.Notices.Latest), r.Notices.Total, r.Notices.Filter, r.Notices.Stream)
		for _, n := range r.Notices.Latest {
			p("  %s\n", NoticeLine(n))
		}
		if r.Notices.Note != "" {
			p("  note: %s\n", r.Notices.Note)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// NoticeLine renders a notice summary on one line: time, type, user and
// the type's fields.
func NoticeLine(n Notice) string {
	var b strings.Builder
	b.WriteString(n.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	fmt.Fprintf(&b, "  %-26s", strings.TrimPrefix(n.Type, "dialsync."))
	if n.UserID != 0 {
		fmt.Fprintf(&b, "  user %d", n.UserID)
	}
	if len(n.Tables) > 0 || len(n.Columns) > 0 || len(n.Operations) > 0 {
		fmt.Fprintf(&b, "  tables=%s operations=%s columns=%s",
			strings.Join(n.Tables, ","), strings.Join(n.Operations, ","), strings.Join(n.Columns, ","))
	}
	if n.OpenClaims != nil {
		fmt.Fprintf(&b, "  open_claims=%d pending_requirements=%d oldest_pending_at=%s",
			*n.OpenClaims, deref(n.PendingRequirements), timeOr(n.OldestPendingAt, "none"))
	}
	if n.Detail != "" {
		b.WriteString("  " + n.Detail)
	}
	return b.String()
}

func rowText(r *Row) string {
	return fmt.Sprintf("open_claims=%d pending_requirements=%d oldest_pending_at=%s",
		r.OpenClaims, r.PendingRequirements, timeOr(r.OldestPendingAt, "none"))
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func present(b bool) string {
	if b {
		return "present"
	}
	return "missing (NULL or empty)"
}

func intOrNull(p *int64) string {
	if p == nil {
		return "NULL"
	}
	return strconv.FormatInt(*p, 10)
}

func strOrNull(p *string) string {
	if p == nil {
		return "NULL"
	}
	return strconv.Quote(*p)
}

func timeOr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339Nano)
}
