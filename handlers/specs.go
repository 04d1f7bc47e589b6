package handlers

import "dialsync/change"

// The five source tables (docs/design.md, pipeline). Any other table is
// ignored.
const (
	TableUsers                = "users"
	TableUserAddresses        = "user_addresses"
	TableClaims               = "claims"
	TableClaimRequirements    = "claim_requirements"
	TableClaimVehiclePackages = "claim_vehicle_packages"
)

// Column order contract: a tracked table's Row starts with the handler's own
// columns, in exactly the order below, so Handle indexes a Row by these
// constants instead of searching names on every change. Columns added by
// SpecsWith (allow-listed values for notices) always come after them; find
// their index with ColumnIndex once, at start-up.
//
// Every table: index 0 is the primary key "id". The tables that point at a
// parent carry the parent id at index 1 ("user_id" or "claim_id"); users
// carries current_user_address_id at index 1, so the apply side knows which
// users point at an address at each place in the binlog.
const (
	colID     = 0 // "id"
	colParent = 1 // "user_id" / "claim_id"
)

// ownColumns lists the handler's own columns per table, in contract order.
// Kept minimal: each column copied out of the binlog costs decode time and
// memory in every buffered transaction.
// Indexed by tableKind; the array order is also the order of Specs.
var ownColumns = [...]struct {
	table string
	cols  []string
}{
	kindUsers:           {TableUsers, []string{"id", "current_user_address_id"}},
	kindAddresses:       {TableUserAddresses, []string{"id", "user_id"}},
	kindClaims:          {TableClaims, []string{"id", "user_id"}},
	kindRequirements:    {TableClaimRequirements, []string{"id", "claim_id"}},
	kindVehiclePackages: {TableClaimVehiclePackages, []string{"id", "claim_id"}},
}

// Tables returns the tracked tables' names in Specs order (users, then the
// tables that point at them): the one list of them every part of dialsync
// uses (config validation, metrics, the demo schema). The slice is fresh.
func Tables() []string {
	names := make([]string, len(ownColumns))
	for i, oc := range ownColumns {
		names[i] = oc.table
	}
	return names
}

// IsTracked reports whether Handle does anything with rows of table. Table
// names are compared exactly, as MySQL on Linux does (lower_case_table_names=0).
func IsTracked(table string) bool {
	_, ok := kindOf(table)
	return ok
}

// Specs returns the columns each tracked table must deliver, in a fixed table
// order. The returned slices are fresh: callers may modify them.
func Specs() []change.TableSpec { return SpecsWith(nil) }

// SpecsWith is Specs plus allow-listed columns (table -> column names) whose
// values notices may carry. For each table the handler's own columns come
// first, in contract order, then the extra columns in the order given,
// skipping any already present (own or earlier extra), so a column never
// appears twice. Entries for tables that are not tracked are ignored: config
// validation should reject them with IsTracked, naming the table.
func SpecsWith(extra map[string][]string) []change.TableSpec {
	specs := make([]change.TableSpec, 0, len(ownColumns))
	for _, t := range ownColumns {
		cols := make([]string, len(t.cols), len(t.cols)+len(extra[t.table]))
		copy(cols, t.cols)
		for _, c := range extra[t.table] {
			if indexOf(cols, c) < 0 {
				cols = append(cols, c)
			}
		}
		specs = append(specs, change.TableSpec{Table: t.table, Columns: cols})
	}
	return specs
}

// ColumnIndex returns the position of column in spec's Rows, or -1 when the
// spec does not deliver it. Use it at start-up for allow-listed columns; an
// allow-listed column that is also a handler column shares its index.
func ColumnIndex(spec change.TableSpec, column string) int { return indexOf(spec.Columns, column) }

func indexOf(cols []string, c string) int {
	for i, x := range cols {
		if x == c {
			return i
		}
	}
	return -1
}
