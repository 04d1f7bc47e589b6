// Package doccheck holds the tests that keep the documentation's facts in
// step with the code: numbers the code decides (the schema version), the
// package layout the README lists, and the paths the docs name. It has no
// code of its own.
package doccheck
