package handlers

import (
	"fmt"
	"strconv"
	"strings"
)

// Default cache keys, the ones the dialler reads (docs/design.md, pipeline).
// The config layer starts from these; NewKeys itself takes the lists as
// given.
var (
	// DefaultUserKeyTemplates are the per-user keys; IDPlaceholder is the
	// user id.
	DefaultUserKeyTemplates = []string{"user:" + IDPlaceholder + ":context", "user:" + IDPlaceholder + ":claims"}
	// DefaultQueueKeys are dropped when queue membership or a queued row
	// changes.
	DefaultQueueKeys = []string{"eligible_users", "queue:queued"}
)

// IDPlaceholder marks where the user id goes in a user key template.
const IDPlaceholder = "{id}"

// Keys builds the Redis keys to delete. It is immutable after NewKeys and
// safe for concurrent use.
type Keys struct {
	// users holds each user template split at {id}, the prefix already
	// joined to the head, so AppendUser only concatenates.
	users []userTemplate
	// queue holds the prefixed queue keys.
	queue []string
}

type userTemplate struct{ head, tail string }

// NewKeys validates the templates and precomputes the keys. prefix (may be
// empty) is put in front of every key. Each user template must contain
// "{id}" exactly once; every queue key must be non-empty. Empty lists are
// allowed and mean "no such keys": defaults are the config layer's business
// (DefaultUserKeyTemplates, DefaultQueueKeys).
func NewKeys(prefix string, userTemplates, queueKeys []string) (*Keys, error) {
	k := &Keys{
		users: make([]userTemplate, 0, len(userTemplates)),
		queue: make([]string, 0, len(queueKeys)),
	}
	for _, t := range userTemplates {
		if n := strings.Count(t, IDPlaceholder); n != 1 {
			return nil, fmt.Errorf("cache key template %q: must contain %s exactly once, found %d", t, IDPlaceholder, n)
		}
		head, tail, _ := strings.Cut(t, IDPlaceholder)
		k.users = append(k.users, userTemplate{head: prefix + head, tail: tail})
	}
	for i, q := range queueKeys {
		if q == "" {
			return nil, fmt.Errorf("queue cache key #%d: empty", i+1)
		}
		k.queue = append(k.queue, prefix+q)
	}
	return k, nil
}

// AppendUser appends user's keys, one per template in template order, to
// dst and returns the extended slice. It allocates only the key strings
// (and dst when it must grow): no fmt, no template parsing.
func (k *Keys) AppendUser(dst []string, user uint64) []string {
	var buf [128]byte
	for _, t := range k.users {
		b := append(buf[:0], t.head...)
		b = strconv.AppendUint(b, user, 10)
		b = append(b, t.tail...)
		dst = append(dst, string(b))
	}
	return dst
}

// Queue returns the prefixed queue keys. The slice is shared: do not modify
// its elements (appending to it is safe, its capacity is clipped).
func (k *Keys) Queue() []string { return k.queue[:len(k.queue):len(k.queue)] }

// AppendQueue appends the prefixed queue keys to dst.
func (k *Keys) AppendQueue(dst []string) []string { return append(dst, k.queue...) }
