package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Size says how much data Seed writes. Row counts are exact functions of
// Size (see Counts); the values in the rows come from RandSeed.
type Size struct {
	// Users is the number of users rows (ids 1..Users).
	Users int
	// ClaimsPerUser: Users*ClaimsPerUser claims, each owned by a random user
	// (so some users have none and some have many).
	ClaimsPerUser int
	// RequirementsPerClaim: claims*RequirementsPerClaim claim_requirements,
	// each on a random claim.
	RequirementsPerClaim int
	// VehiclePackagePercent: claims*VehiclePackagePercent/100
	// claim_vehicle_packages, each on a random claim.
	VehiclePackagePercent int
	// RandSeed seeds every random choice; the same Size gives the same rows.
	RandSeed uint64
}

// DefaultSize is the reference data set: 50k users, 150k claims,
// 300k requirements, ~51k addresses and 75k vehicle packages.
var DefaultSize = Size{Users: 50_000, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 1}

// Counts are the exact row counts Seed writes for a Size.
type Counts struct {
	Users, Addresses, Claims, Requirements, VehiclePackages int
}

// Counts returns the number of rows Seed writes per table.
func (s Size) Counts() Counts {
	c := Counts{Users: s.Users, Claims: s.Users * s.ClaimsPerUser}
	c.Requirements = c.Claims * s.RequirementsPerClaim
	c.VehiclePackages = c.Claims * s.VehiclePackagePercent / 100
	for i := 1; i <= s.Users; i++ {
		c.Addresses += addressCount(i)
	}
	return c
}

// addressCount is how many user_addresses user i owns: most have one, every
// 7th has moved house (two), every 10th has none.
func addressCount(i int) int {
	switch {
	case i%10 == 0:
		return 0
	case i%7 == 0:
		return 2
	}
	return 1
}

// seedEpoch anchors every seeded timestamp, so data is identical across runs.
var seedEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// rowsPerInsert keeps each multi-row INSERT around a few hundred KB, far
// below the default max_allowed_packet (16 MB on MariaDB, 64 MB on MySQL 8).
const rowsPerInsert = 2000

// Seed fills the (empty) demo tables. Ids are explicit (1..n per table), so
// the tables are written concurrently, each over its own connection, with
// multi-row INSERTs. Timestamps are written in UTC (the session time zone is
// set to +00:00 on those connections and reset afterwards).
func Seed(ctx context.Context, db *sql.DB, s Size) error {
	if s.Users <= 0 || s.ClaimsPerUser < 0 || s.RequirementsPerClaim < 0 || s.VehiclePackagePercent < 0 {
		return fmt.Errorf("seed: invalid size %+v", s)
	}
	for _, t := range Tables {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM (SELECT 1 FROM "+t+" LIMIT 1) x").Scan(&n); err != nil {
			return fmt.Errorf("seed: check %s is empty: %w", t, err)
		}
		if n > 0 {
			return fmt.Errorf("seed: table %s is not empty (seed writes explicit ids)", t)
		}
	}
	g := newGenerator(s)
	tables := []struct {
		name, columns string
		rows          int
		row           func(r *rand.Rand, id int, b *strings.Builder)
	}{
		{"users", "id, first_name, last_name, email, phone_number, status, is_enabled, introducer, solicitor, current_user_address_id, last_login, created_at, updated_at, deleted_at", s.Users, g.user},
		{"user_addresses", "id, user_id, full_address, post_code, county, created_at, updated_at", len(g.addressOwner) - 1, g.address},
		{"claims", "id, user_id, type, status, lender, solicitor, client_last_updated_at, created_at, updated_at, deleted_at", g.counts.Claims, g.claim},
		{"claim_requirements", "id, claim_id, type, status, claim_requirement_reason, created_at, updated_at", g.counts.Requirements, g.requirement},
		{"claim_vehicle_packages", "id, claim_id, vehicle_registration, vehicle_make, vehicle_model, dealership_name, monthly_payment, created_at, updated_at", g.counts.VehiclePackages, g.vehiclePackage},
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(tables))
	for i, t := range tables {
		wg.Go(func() {
			// Each table has its own stream of randomness, so concurrency
			// does not change the data.
			r := rand.New(rand.NewPCG(s.RandSeed, uint64(i+1)))
			if err := insertAll(ctx, db, t.name, t.columns, t.rows, r, t.row); err != nil {
				errs[i] = fmt.Errorf("seed %s: %w", t.name, err)
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func insertAll(ctx context.Context, db *sql.DB, table, columns string, n int, r *rand.Rand,
	row func(r *rand.Rand, id int, b *strings.Builder)) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("get connection: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET time_zone = '+00:00'"); err != nil {
		return fmt.Errorf("set time zone: %w", err)
	}
	defer func() {
		// The connection goes back to the pool: leave no session state behind.
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "SET time_zone = DEFAULT"); rerr != nil && err == nil {
			err = fmt.Errorf("reset time zone: %w", rerr)
		}
	}()
	// One transaction per table: a commit per statement would cost an fsync
	// each (innodb_flush_log_at_trx_commit = 1).
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var b strings.Builder
	for start := 1; start <= n; start += rowsPerInsert {
		end := min(start+rowsPerInsert-1, n)
		b.Reset()
		b.WriteString("INSERT INTO " + table + " (" + columns + ") VALUES ")
		for id := start; id <= end; id++ {
			if id > start {
				b.WriteByte(',')
			}
			b.WriteByte('(')
			row(r, id, &b)
			b.WriteByte(')')
		}
		if _, err := tx.ExecContext(ctx, b.String()); err != nil {
			return fmt.Errorf("insert rows %d..%d: %w", start, end, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// generator produces the rows. Relations that must agree across tables
// (which addresses a user owns, how many claims exist) are precomputed
// here; everything else is drawn from the per-table random stream.
type generator struct {
	size   Size
	counts Counts
	// addressOwner[a] is the user of address a (index 0 unused).
	addressOwner []int
	// currentAddress[u] is user u's current_user_address_id (0: NULL).
	currentAddress []int
}

func newGenerator(s Size) *generator {
	g := &generator{size: s, counts: s.Counts(), addressOwner: []int{0}, currentAddress: make([]int, s.Users+1)}
	for u := 1; u <= s.Users; u++ {
		for range addressCount(u) {
			g.addressOwner = append(g.addressOwner, u)
		}
		if addressCount(u) > 0 {
			g.currentAddress[u] = len(g.addressOwner) - 1 // the newest one
		} else if u%50 == 0 && g.currentAddress[u-1] != 0 {
			// A household: this user lives at the previous user's address,
			// so an address change touches a user who does not own it.
			g.currentAddress[u] = g.currentAddress[u-1]
		}
	}
	return g
}

var (
	firstNames = []string{"Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack", "Ivy",
		"Leo", "Lily", "Arthur", "Freya", "Muhammad", "Grace", "Oscar", "Sophia", "Charlie", "Rosie", "Siobhan", "Dylan"}
	lastNames = []string{"Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
		"Wright", "Walker", "Evans", "Thomas", "Roberts", "Khan", "O'Brien", "Hughes", "Clarke", "Lewis", "Edwards"}
	introducers = []string{"MoneySavers Ltd", "ClaimFinder", "Refund Direct", "Web"}
	solicitors  = []string{"Harper & Co", "Lane Legal LLP", "Morgan Solicitors", "Bennett Law"}
	streets     = []string{"High Street", "Station Road", "Church Lane", "Victoria Road", "Park Avenue", "Mill Lane", "The Green"}
	towns       = []string{"Leeds", "Bristol", "Norwich", "York", "Derby", "Exeter", "Bolton", "Swansea", "Stockport"}
	counties    = []string{"West Yorkshire", "Somerset", "Norfolk", "North Yorkshire", "Derbyshire", "Devon", "Greater Manchester"}
	claimTypes  = []string{"pcp", "hire_purchase", "credit_card", "payday_loan"}
	lenders     = []string{"Northgate Finance", "Blue Motor Credit", "Albion Bank", "Crescent Loans", "Lakeside Auto Finance"}
	reqTypes    = []string{"id_document", "proof_of_address", "signed_loa", "finance_agreement", "bank_statement"}
	reasons     = []string{"Awaiting upload", "Document unreadable", "Expired document", "Lender requested"}
	makes       = []string{"Ford", "Vauxhall", "Volkswagen", "BMW", "Audi", "Toyota", "Nissan", "Kia"}
	models      = []string{"Focus", "Corsa", "Golf", "3 Series", "A3", "Yaris", "Qashqai", "Sportage"}
	dealers     = []string{"Arnold Motors", "Evans Halshaw", "Lookers", "Sytner", "Pendragon"}
)

// Status weights (out of 100). Open claim statuses are the ones the default
// queue rule accepts; closed/rejected/paid are excluded by it.
var (
	userStatuses        = weighted{{"active", 80}, {"inactive", 12}, {"suspended", 8}}
	claimStatuses       = weighted{{"new", 20}, {"in_progress", 20}, {"submitted", 15}, {"closed", 20}, {"rejected", 12}, {"paid", 13}}
	requirementStatuses = weighted{{"PENDING", 35}, {"COMPLETE", 55}, {"CANCELLED", 10}}
)

type weighted []struct {
	v string
	w int
}

func (ws weighted) pick(r *rand.Rand) string {
	n := r.IntN(100)
	for _, x := range ws {
		if n < x.w {
			return x.v
		}
		n -= x.w
	}
	return ws[len(ws)-1].v
}

func pick(r *rand.Rand, xs []string) string { return xs[r.IntN(len(xs))] }

// quote renders a MySQL string literal. Backslashes are doubled because the
// default sql_mode treats them as escapes.
func quote(s string) string {
	if strings.ContainsAny(s, `'\`) {
		s = sqlEscaper.Replace(s)
	}
	return "'" + s + "'"
}

var sqlEscaper = strings.NewReplacer(`\`, `\\`, `'`, `''`)

func ts(t time.Time) string { return "'" + t.UTC().Format(time.DateTime) + "'" }

func randomTime(r *rand.Rand) time.Time {
	return seedEpoch.Add(time.Duration(r.IntN(365*24*3600)) * time.Second)
}

// phone returns a UK-style mobile number; ~10% of users have none (half
// NULL, half empty), which the default rule excludes.
func phone(r *rand.Rand) string {
	switch n := r.IntN(100); {
	case n < 5:
		return "NULL"
	case n < 10:
		return "''"
	}
	return fmt.Sprintf("'07%09d'", r.IntN(1_000_000_000))
}

func nullable(r *rand.Rand, percentNull int, v string) string {
	if r.IntN(100) < percentNull {
		return "NULL"
	}
	return quote(v)
}

func (g *generator) user(r *rand.Rand, id int, b *strings.Builder) {
	first, last := pick(r, firstNames), pick(r, lastNames)
	email := strings.ToLower(strings.ReplaceAll(first+"."+last, "'", "")) + "." + strconv.Itoa(id) + "@example.com"
	enabled := "1"
	if r.IntN(100) < 5 {
		enabled = "0"
	}
	current := "NULL"
	if a := g.currentAddress[id]; a != 0 {
		current = strconv.Itoa(a)
	}
	created := randomTime(r)
	lastLogin := "NULL"
	if r.IntN(100) < 70 {
		lastLogin = ts(created.Add(time.Duration(r.IntN(90*24)) * time.Hour))
	}
	deleted := "NULL"
	if r.IntN(100) < 3 {
		deleted = ts(created.Add(200 * 24 * time.Hour))
	}
	fmt.Fprintf(b, "%d,%s,%s,%s,%s,'%s',%s,%s,%s,%s,%s,%s,%s,%s",
		id, quote(first), quote(last), quote(email), phone(r), userStatuses.pick(r), enabled,
		nullable(r, 40, pick(r, introducers)), nullable(r, 30, pick(r, solicitors)), current, lastLogin,
		ts(created), ts(created.Add(time.Duration(r.IntN(100))*time.Hour)), deleted)
}

func (g *generator) address(r *rand.Rand, id int, b *strings.Builder) {
	created := randomTime(r)
	addr := fmt.Sprintf("%d %s, %s", 1+r.IntN(200), pick(r, streets), pick(r, towns))
	post := fmt.Sprintf("%c%c%d %d%c%c", 'A'+r.IntN(26), 'A'+r.IntN(26), 1+r.IntN(20), r.IntN(10), 'A'+r.IntN(26), 'A'+r.IntN(26))
	fmt.Fprintf(b, "%d,%d,%s,%s,%s,%s,%s", id, g.addressOwner[id], quote(addr), quote(post),
		nullable(r, 10, pick(r, counties)), ts(created), ts(created))
}

func (g *generator) claim(r *rand.Rand, id int, b *strings.Builder) {
	created := randomTime(r)
	deleted := "NULL"
	if r.IntN(100) < 4 {
		deleted = ts(created.Add(30 * 24 * time.Hour))
	}
	fmt.Fprintf(b, "%d,%d,'%s','%s',%s,%s,%s,%s,%s,%s", id, 1+r.IntN(g.size.Users), pick(r, claimTypes),
		claimStatuses.pick(r), quote(pick(r, lenders)), nullable(r, 30, pick(r, solicitors)),
		ts(created.Add(time.Duration(r.IntN(1000))*time.Hour)), ts(created), ts(created), deleted)
}

func (g *generator) requirement(r *rand.Rand, id int, b *strings.Builder) {
	created := ts(randomTime(r))
	if r.IntN(100) < 1 {
		created = "NULL" // old rows imported without timestamps exist in real apps
	}
	fmt.Fprintf(b, "%d,%d,'%s','%s',%s,%s,%s", id, 1+r.IntN(max(g.counts.Claims, 1)), pick(r, reqTypes),
		requirementStatuses.pick(r), nullable(r, 50, pick(r, reasons)), created, created)
}

func (g *generator) vehiclePackage(r *rand.Rand, id int, b *strings.Builder) {
	created := randomTime(r)
	reg := fmt.Sprintf("%c%c%02d %c%c%c", 'A'+r.IntN(26), 'A'+r.IntN(26), r.IntN(100), 'A'+r.IntN(26), 'A'+r.IntN(26), 'A'+r.IntN(26))
	fmt.Fprintf(b, "%d,%d,%s,%s,%s,%s,%d.%02d,%s,%s", id, 1+r.IntN(max(g.counts.Claims, 1)), quote(reg),
		quote(pick(r, makes)), quote(pick(r, models)), nullable(r, 20, pick(r, dealers)),
		99+r.IntN(600), r.IntN(100), ts(created), ts(created))
}

// SamplePII returns up to n each of seeded emails, phone numbers and full
// addresses currently in db: values that must never appear in dialsync's
// logs or notices (tests scan for them).
func SamplePII(ctx context.Context, db *sql.DB, n int) ([]string, error) {
	queries := []string{
		"SELECT email FROM users ORDER BY id LIMIT ?",
		"SELECT phone_number FROM users WHERE phone_number <> '' ORDER BY id LIMIT ?",
		"SELECT full_address FROM user_addresses ORDER BY id LIMIT ?",
	}
	var out []string
	for _, q := range queries {
		rows, err := db.QueryContext(ctx, q, n)
		if err != nil {
			return nil, fmt.Errorf("sample pii: %w", err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sample pii: %w", err)
			}
			out = append(out, s)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("sample pii: %w", err)
		}
	}
	return out, nil
}
