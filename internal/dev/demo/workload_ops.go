package demo

import (
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// The workload's operations: one function per kind of source transaction
// (see ops in workload.go for their weights). Each records the users it
// touches (txn.touch), which the chaos checker compares with the notices.

func opUserStatus(t *txn) error {
	var id uint64
	var status string
	if err := t.pick("users", "id, status", &id, &status); err != nil {
		return err
	}
	t.touch(id)
	_, err := t.exec("users", fmt.Sprintf("UPDATE users SET status = %s, updated_at = NOW() WHERE id = %d",
		quote(otherThan(t.w.r, []string{"active", "inactive", "suspended"}, status)), id))
	return err
}

func opUserPhone(t *txn) error {
	var id uint64
	var cur sql.NullString
	if err := t.pick("users", "id, phone_number", &id, &cur); err != nil {
		return err
	}
	var next string
	switch n := t.w.r.IntN(100); {
	case n < 15 && cur.Valid:
		next = "NULL"
	case n < 30 && cur.String != "":
		next = "''"
	default:
		next = quote(t.randomPhone()) // a fresh random number differs from cur
	}
	t.touch(id)
	_, err := t.exec("users", fmt.Sprintf("UPDATE users SET phone_number = %s, updated_at = NOW() WHERE id = %d", next, id))
	return err
}

func opUserEnabled(t *txn) error {
	var id uint64
	if err := t.pick("users", "id", &id); err != nil {
		return err
	}
	t.touch(id)
	_, err := t.exec("users", fmt.Sprintf("UPDATE users SET is_enabled = 1 - is_enabled, updated_at = NOW() WHERE id = %d", id))
	return err
}

func opUserSoftDelete(t *txn) error {
	var id uint64
	if err := t.pick("users", "id", &id); err != nil {
		return err
	}
	t.touch(id)
	_, err := t.exec("users", fmt.Sprintf(
		"UPDATE users SET deleted_at = IF(deleted_at IS NULL, NOW(), NULL), updated_at = NOW() WHERE id = %d", id))
	return err
}

func opUserInsert(t *txn) error {
	r := t.w.r
	first, last := pick(r, firstNames), pick(r, lastNames)
	email := fmt.Sprintf("w%x@example.com", r.Uint64())
	id, err := t.insert("users", fmt.Sprintf(`INSERT INTO users (first_name, last_name, email, phone_number, status,
		is_enabled, created_at, updated_at) VALUES (%s, %s, %s, %s, 'active', 1, NOW(), NOW())`,
		quote(first), quote(last), quote(email), quote(t.randomPhone())))
	if err != nil {
		return err
	}
	full, post := t.randomAddress()
	addr, err := t.insert("user_addresses", fmt.Sprintf(`INSERT INTO user_addresses (user_id, full_address, post_code,
		created_at, updated_at) VALUES (%d, %s, %s, NOW(), NOW())`, id, quote(full), quote(post)))
	if err != nil {
		return err
	}
	t.touch(id)
	_, err = t.exec("users", fmt.Sprintf("UPDATE users SET current_user_address_id = %d WHERE id = %d", addr, id))
	return err
}

// opUserHardDelete erases a user and everything hanging off them, as a GDPR
// erasure would; users living at one of their addresses lose it.
func opUserHardDelete(t *txn) error {
	var id uint64
	if err := t.pick("users", "id", &id); err != nil {
		return err
	}
	t.touch(id)
	addrs, err := t.ids(fmt.Sprintf("SELECT id FROM user_addresses WHERE user_id = %d FOR UPDATE", id))
	if err != nil {
		return err
	}
	for _, a := range addrs {
		residents, err := t.addressUsers(a, id)
		if err != nil {
			return err
		}
		t.touch(residents...)
	}
	claims, err := t.ids(fmt.Sprintf("SELECT id FROM claims WHERE user_id = %d FOR UPDATE", id))
	if err != nil {
		return err
	}
	if len(claims) > 0 {
		in := idList(claims)
		if _, err := t.exec("claim_requirements", "DELETE FROM claim_requirements WHERE claim_id IN ("+in+")"); err != nil {
			return err
		}
		if _, err := t.exec("claim_vehicle_packages", "DELETE FROM claim_vehicle_packages WHERE claim_id IN ("+in+")"); err != nil {
			return err
		}
		if _, err := t.exec("claims", "DELETE FROM claims WHERE id IN ("+in+")"); err != nil {
			return err
		}
	}
	if len(addrs) > 0 {
		in := idList(addrs)
		if _, err := t.exec("users", "UPDATE users SET current_user_address_id = NULL, updated_at = NOW() WHERE current_user_address_id IN ("+in+") AND id <> "+strconv.FormatUint(id, 10)); err != nil {
			return err
		}
		if _, err := t.exec("user_addresses", "DELETE FROM user_addresses WHERE id IN ("+in+")"); err != nil {
			return err
		}
	}
	_, err = t.exec("users", fmt.Sprintf("DELETE FROM users WHERE id = %d", id))
	return err
}

func opUsersBulkStatus(t *txn) error {
	start := 1 + t.w.r.Uint64N(max(t.w.maxID["users"], 1))
	ids, err := t.ids(fmt.Sprintf("SELECT id FROM users WHERE id >= %d ORDER BY id LIMIT %d FOR UPDATE", start, 2+t.w.r.IntN(4)))
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return errSkip
	}
	t.touch(ids...)
	_, err = t.exec("users", "UPDATE users SET status = IF(status = 'active', 'inactive', 'active'), updated_at = NOW() WHERE id IN ("+idList(ids)+")")
	return err
}

// opAddressMove: a user moves house; the new address becomes current.
func opAddressMove(t *txn) error {
	var id uint64
	if err := t.pick("users", "id", &id); err != nil {
		return err
	}
	full, post := t.randomAddress()
	addr, err := t.insert("user_addresses", fmt.Sprintf(`INSERT INTO user_addresses (user_id, full_address, post_code,
		county, created_at, updated_at) VALUES (%d, %s, %s, %s, NOW(), NOW())`, id, quote(full), quote(post), quote(pick(t.w.r, counties))))
	if err != nil {
		return err
	}
	t.touch(id)
	_, err = t.exec("users", fmt.Sprintf("UPDATE users SET current_user_address_id = %d, updated_at = NOW() WHERE id = %d", addr, id))
	return err
}

func opAddressUpdate(t *txn) error {
	var id, owner uint64
	var cur string
	if err := t.pick("user_addresses", "id, user_id, full_address", &id, &owner, &cur); err != nil {
		return err
	}
	users, err := t.addressUsers(id, owner)
	if err != nil {
		return err
	}
	full, post := t.randomAddress()
	for full == cur {
		full, post = t.randomAddress()
	}
	t.touch(users...)
	_, err = t.exec("user_addresses", fmt.Sprintf("UPDATE user_addresses SET full_address = %s, post_code = %s, updated_at = NOW() WHERE id = %d",
		quote(full), quote(post), id))
	return err
}

func opAddressDelete(t *txn) error {
	var id, owner uint64
	if err := t.pick("user_addresses", "id, user_id", &id, &owner); err != nil {
		return err
	}
	users, err := t.addressUsers(id, owner)
	if err != nil {
		return err
	}
	t.touch(users...)
	if _, err := t.exec("users", fmt.Sprintf("UPDATE users SET current_user_address_id = NULL, updated_at = NOW() WHERE current_user_address_id = %d", id)); err != nil {
		return err
	}
	_, err = t.exec("user_addresses", fmt.Sprintf("DELETE FROM user_addresses WHERE id = %d", id))
	return err
}

func opClaimInsert(t *txn) error {
	var user uint64
	if err := t.pick("users", "id", &user); err != nil {
		return err
	}
	r := t.w.r
	claim, err := t.insert("claims", fmt.Sprintf(`INSERT INTO claims (user_id, type, status, lender, created_at, updated_at)
		VALUES (%d, %s, 'new', %s, NOW(), NOW())`, user, quote(pick(r, claimTypes)), quote(pick(r, lenders))))
	if err != nil {
		return err
	}
	t.touch(user)
	// One multi-row INSERT: several rows of one table in one statement.
	var vals []string
	for range 1 + r.IntN(3) {
		vals = append(vals, fmt.Sprintf("(%d, %s, 'PENDING', NOW(), NOW())", claim, quote(pick(r, reqTypes))))
	}
	if _, err := t.insert("claim_requirements", "INSERT INTO claim_requirements (claim_id, type, status, created_at, updated_at) VALUES "+strings.Join(vals, ", ")); err != nil {
		return err
	}
	t.rows += int64(len(vals) - 1) // insert counted one row
	if r.IntN(2) == 0 {
		return insertPackage(t, claim)
	}
	return nil
}

func insertPackage(t *txn, claim uint64) error {
	r := t.w.r
	reg := fmt.Sprintf("%c%c%02d %c%c%c", 'A'+r.IntN(26), 'A'+r.IntN(26), r.IntN(100), 'A'+r.IntN(26), 'A'+r.IntN(26), 'A'+r.IntN(26))
	_, err := t.insert("claim_vehicle_packages", fmt.Sprintf(`INSERT INTO claim_vehicle_packages (claim_id, vehicle_registration,
		vehicle_make, vehicle_model, dealership_name, monthly_payment, created_at, updated_at)
		VALUES (%d, %s, %s, %s, %s, %d.%02d, NOW(), NOW())`, claim, quote(reg), quote(pick(r, makes)),
		quote(pick(r, models)), quote(pick(r, dealers)), 99+r.IntN(600), r.IntN(100)))
	return err
}

func opClaimStatus(t *txn) error {
	var id, user uint64
	var status string
	if err := t.pick("claims", "id, user_id, status", &id, &user, &status); err != nil {
		return err
	}
	t.touch(user)
	next := otherThan(t.w.r, []string{"new", "in_progress", "submitted", "closed", "rejected", "paid"}, status)
	if _, err := t.exec("claims", fmt.Sprintf("UPDATE claims SET status = %s, client_last_updated_at = NOW(), updated_at = NOW() WHERE id = %d",
		quote(next), id)); err != nil {
		return err
	}
	if t.w.r.IntN(4) == 0 {
		// Tracked and untracked rows in one transaction.
		_, err := t.insert(UntrackedTable, fmt.Sprintf("INSERT INTO audit_log (actor, action, subject_id, created_at) VALUES ('agent', 'claim.status', %d, NOW())", id))
		return err
	}
	return nil
}

func opClaimMove(t *txn) error {
	var id, from, to uint64
	if err := t.pick("claims", "id, user_id", &id, &from); err != nil {
		return err
	}
	if err := t.pick("users", "id", &to); err != nil {
		return err
	}
	if to == from {
		return errSkip
	}
	t.touch(from, to)
	_, err := t.exec("claims", fmt.Sprintf("UPDATE claims SET user_id = %d, updated_at = NOW() WHERE id = %d", to, id))
	return err
}

func opClaimSoftDelete(t *txn) error {
	var id, user uint64
	if err := t.pick("claims", "id, user_id", &id, &user); err != nil {
		return err
	}
	t.touch(user)
	_, err := t.exec("claims", fmt.Sprintf(
		"UPDATE claims SET deleted_at = IF(deleted_at IS NULL, NOW(), NULL), updated_at = NOW() WHERE id = %d", id))
	return err
}

func opClaimHardDelete(t *txn) error {
	var id, user uint64
	if err := t.pick("claims", "id, user_id", &id, &user); err != nil {
		return err
	}
	t.touch(user)
	if _, err := t.exec("claim_requirements", fmt.Sprintf("DELETE FROM claim_requirements WHERE claim_id = %d", id)); err != nil {
		return err
	}
	if _, err := t.exec("claim_vehicle_packages", fmt.Sprintf("DELETE FROM claim_vehicle_packages WHERE claim_id = %d", id)); err != nil {
		return err
	}
	_, err := t.exec("claims", fmt.Sprintf("DELETE FROM claims WHERE id = %d", id))
	return err
}

// childOwner locks a child row's claim and records its user when the claim
// still exists.
func (t *txn) childOwner(claim uint64) error {
	user, ok, err := t.claimOwner(claim)
	if err != nil {
		return err
	}
	if ok {
		t.touch(user)
	}
	return nil
}

func opRequirementFlip(t *txn) error {
	var id, claim uint64
	var status string
	if err := t.pick("claim_requirements", "id, claim_id, status", &id, &claim, &status); err != nil {
		return err
	}
	if err := t.childOwner(claim); err != nil {
		return err
	}
	next := "PENDING"
	if status == "PENDING" {
		next = "COMPLETE"
	}
	_, err := t.exec("claim_requirements", fmt.Sprintf("UPDATE claim_requirements SET status = '%s', updated_at = NOW() WHERE id = %d", next, id))
	return err
}

// opRequirementsCompleteClaim completes every requirement of a claim at once
// (a multi-row UPDATE), or adds a PENDING one when all are complete.
func opRequirementsCompleteClaim(t *txn) error {
	var claim, user uint64
	if err := t.pick("claims", "id, user_id", &claim, &user); err != nil {
		return err
	}
	t.touch(user)
	n, err := t.exec("claim_requirements", fmt.Sprintf(
		"UPDATE claim_requirements SET status = 'COMPLETE', updated_at = NOW() WHERE claim_id = %d AND status <> 'COMPLETE'", claim))
	if err != nil || n > 0 {
		return err
	}
	_, err = t.insert("claim_requirements", fmt.Sprintf(`INSERT INTO claim_requirements (claim_id, type, status,
		claim_requirement_reason, created_at, updated_at) VALUES (%d, %s, 'PENDING', %s, NOW(), NOW())`,
		claim, quote(pick(t.w.r, reqTypes)), quote(pick(t.w.r, reasons))))
	return err
}

func opRequirementInsert(t *txn) error {
	var claim, user uint64
	if err := t.pick("claims", "id, user_id", &claim, &user); err != nil {
		return err
	}
	t.touch(user)
	_, err := t.insert("claim_requirements", fmt.Sprintf(`INSERT INTO claim_requirements (claim_id, type, status,
		created_at, updated_at) VALUES (%d, %s, 'PENDING', NOW(), NOW())`, claim, quote(pick(t.w.r, reqTypes))))
	return err
}

func opRequirementDelete(t *txn) error {
	var id, claim uint64
	if err := t.pick("claim_requirements", "id, claim_id", &id, &claim); err != nil {
		return err
	}
	if err := t.childOwner(claim); err != nil {
		return err
	}
	_, err := t.exec("claim_requirements", fmt.Sprintf("DELETE FROM claim_requirements WHERE id = %d", id))
	return err
}

func opPackageInsert(t *txn) error {
	var claim, user uint64
	if err := t.pick("claims", "id, user_id", &claim, &user); err != nil {
		return err
	}
	t.touch(user)
	return insertPackage(t, claim)
}

func opPackageUpdate(t *txn) error {
	var id, claim uint64
	if err := t.pick("claim_vehicle_packages", "id, claim_id", &id, &claim); err != nil {
		return err
	}
	if err := t.childOwner(claim); err != nil {
		return err
	}
	// +1.00 .. +50.00 always changes the value.
	_, err := t.exec("claim_vehicle_packages", fmt.Sprintf(
		"UPDATE claim_vehicle_packages SET monthly_payment = COALESCE(monthly_payment, 0) + %d, updated_at = NOW() WHERE id = %d", 1+t.w.r.IntN(50), id))
	return err
}

func opPackageDelete(t *txn) error {
	var id, claim uint64
	if err := t.pick("claim_vehicle_packages", "id, claim_id", &id, &claim); err != nil {
		return err
	}
	if err := t.childOwner(claim); err != nil {
		return err
	}
	_, err := t.exec("claim_vehicle_packages", fmt.Sprintf("DELETE FROM claim_vehicle_packages WHERE id = %d", id))
	return err
}

func opAuditInsert(t *txn) error {
	_, err := t.insert(UntrackedTable, fmt.Sprintf("INSERT INTO audit_log (actor, action, subject_id, created_at) VALUES ('system', 'login', %d, NOW())",
		1+t.w.r.IntN(1000)))
	return err
}
