package handlers

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestKeysDefaults(t *testing.T) {
	k, err := NewKeys("", DefaultUserKeyTemplates, DefaultQueueKeys)
	if err != nil {
		t.Fatal(err)
	}
	got := k.AppendUser(nil, 42)
	if want := []string{"user:42:context", "user:42:claims"}; !slices.Equal(got, want) {
		t.Errorf("AppendUser(42) = %q, want %q", got, want)
	}
	if want := []string{"eligible_users", "queue:queued"}; !slices.Equal(k.Queue(), want) {
		t.Errorf("Queue() = %q, want %q", k.Queue(), want)
	}
}

func TestKeysPrefixAndTemplates(t *testing.T) {
	k, err := NewKeys("dialler:", []string{"{id}", "u{id}", "{id}:ctx", "a:{id}:b:c"}, []string{"eligible_users"})
	if err != nil {
		t.Fatal(err)
	}
	dst := []string{"already:there"}
	dst = k.AppendUser(dst, 7)
	dst = k.AppendUser(dst, math.MaxUint64)
	want := []string{"already:there",
		"dialler:7", "dialler:u7", "dialler:7:ctx", "dialler:a:7:b:c",
		"dialler:18446744073709551615", "dialler:u18446744073709551615",
		"dialler:18446744073709551615:ctx", "dialler:a:18446744073709551615:b:c"}
	if !slices.Equal(dst, want) {
		t.Errorf("AppendUser = %q\nwant %q", dst, want)
	}
	if got := k.AppendQueue([]string{"x"}); !slices.Equal(got, []string{"x", "dialler:eligible_users"}) {
		t.Errorf("AppendQueue = %q", got)
	}
	// Appending to Queue() must not write into the shared array.
	q := append(k.Queue(), "extra")
	_ = q
	if got := k.AppendQueue(nil); !slices.Equal(got, []string{"dialler:eligible_users"}) {
		t.Errorf("Queue() was modified through append: %q", got)
	}
}

func TestKeysEmptyLists(t *testing.T) {
	k, err := NewKeys("p:", nil, []string{})
	if err != nil {
		t.Fatal(err)
	}
	if got := k.AppendUser(nil, 1); len(got) != 0 {
		t.Errorf("AppendUser with no templates = %q", got)
	}
	if len(k.Queue()) != 0 {
		t.Errorf("Queue() with no queue keys = %q", k.Queue())
	}
}

func TestKeysValidation(t *testing.T) {
	cases := []struct {
		name            string
		users, queue    []string
		wantErrContains []string
	}{
		{"template without id", []string{"user:{id}:context", "user:claims"}, nil,
			[]string{`"user:claims"`, "{id}", "found 0"}},
		{"template with id twice", []string{"user:{id}:{id}"}, nil,
			[]string{`"user:{id}:{id}"`, "found 2"}},
		{"empty template", []string{""}, nil, []string{`""`, "found 0"}},
		{"empty queue key", nil, []string{"eligible_users", ""}, []string{"#2", "empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKeys("", tc.users, tc.queue)
			if err == nil {
				t.Fatalf("NewKeys = %v, want an error", k)
			}
			for _, s := range tc.wantErrContains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestAppendUserAllocatesOnlyKeys(t *testing.T) {
	k, err := NewKeys("some:prefix:", DefaultUserKeyTemplates, DefaultQueueKeys)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]string, 0, 16)
	allocs := testing.AllocsPerRun(100, func() { dst = k.AppendUser(dst[:0], 123456789) })
	if want := float64(len(DefaultUserKeyTemplates)); allocs != want {
		t.Errorf("AppendUser allocated %.1f times, want %.0f (one per key string)", allocs, want)
	}
}

func BenchmarkAppendUser(b *testing.B) {
	k, err := NewKeys("", DefaultUserKeyTemplates, DefaultQueueKeys)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]string, 0, 16)
	b.ReportAllocs()
	var id uint64
	for b.Loop() {
		id++
		dst = k.AppendUser(dst[:0], id)
	}
}
