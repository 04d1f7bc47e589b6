package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the config as a Go duration string
// ("10s", "500ms", "1h30m"; see time.ParseDuration). "off" is read as 0, which
// the keys that allow it document as "disabled". It is a struct rather than a
// named int64 on purpose: go-toml would store a bare TOML integer into an
// int64 kind as nanoseconds, so `interval = 60` would silently mean 60ns.
// As a struct, a bare integer reaches UnmarshalText and is rejected with the
// expected form.
type Duration struct{ d time.Duration }

// Dur makes a Duration (for defaults and tests).
func Dur(d time.Duration) Duration { return Duration{d} }

// Duration returns the value as a time.Duration; zero means unset/disabled.
func (d Duration) Duration() time.Duration { return d.d }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if strings.EqualFold(s, "off") {
		d.d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("expected a duration string such as \"10s\", \"500ms\" or \"1h30m\", got %q", s)
	}
	d.d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler, writing the shortest form
// ("72h" rather than time.Duration's "72h0m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string {
	s := d.d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ByteSize is a size in bytes. In the config it is either a TOML integer (a
// number of bytes) or a string with a unit: "512KiB", "8MiB", "1GiB" (powers
// of 1024) or "500KB", "8MB", "1GB" (powers of 1000); units are
// case-insensitive and "B" may be omitted for plain bytes.
type ByteSize int64

// Common sizes.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
)

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseByteSize parses a size as described on ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	mult, ok := byteUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("expected a size such as \"8MiB\", \"512KiB\", \"1GB\" or a number of bytes, got %q", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err == nil && (mult == 1 || n <= math.MaxInt64/int64(mult)) {
			return ByteSize(n * int64(mult)), nil
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("expected a size such as \"8MiB\", \"512KiB\", \"1GB\" or a number of bytes, got %q", s)
	}
	return ByteSize(f * mult), nil
}

// UnmarshalText implements encoding.TextUnmarshaler for the string form; go-toml
// stores TOML integers directly (ByteSize is an int64 kind).
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// String writes the size with the largest binary unit that divides it exactly.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		size ByteSize
	}{{"TiB", 1 << 40}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if b != 0 && b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}
