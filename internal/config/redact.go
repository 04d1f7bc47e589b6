package config

import (
	"net/url"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Redacted is the placeholder written instead of a secret.
const Redacted = "REDACTED"

// Redacted returns the effective configuration as TOML with every secret set
// replaced by "REDACTED" and passwords inside URLs (redis.addr, nats.url)
// masked. A secret read from its _file shows the path and an empty value, so
// the output parses again as it is.
func (c *Config) Redacted() string {
	b, err := toml.Marshal(c.redactedCopy())
	if err != nil {
		// Marshal of this plain struct cannot fail; never fall back to
		// anything that could print a secret.
		return "# config: cannot render: " + err.Error() + "\n"
	}
	return string(b)
}

// redactedCopy is a deep enough copy of c (its lists are copied) with the
// secrets replaced as Redacted describes.
func (c *Config) redactedCopy() *Config {
	cp := *c
	cp.Cache.UserKeys = append([]string(nil), c.Cache.UserKeys...)
	cp.Cache.QueueKeys = append([]string(nil), c.Cache.QueueKeys...)
	cp.Notices.IncludeValues = append([]string{}, c.Notices.IncludeValues...)
	fs := cp.fields()
	byKey := make(map[string]field, len(fs))
	for _, f := range fs {
		byKey[f.Key] = f
	}
	for _, f := range fs {
		if !f.Secret || f.Value.String() == "" {
			continue
		}
		if ff, ok := byKey[f.Key+"_file"]; ok && ff.Value.String() != "" {
			f.Value.SetString("")
			continue
		}
		f.Value.SetString(Redacted)
	}
	cp.Redis.Addr = redactURLs(cp.Redis.Addr)
	cp.NATS.URL = redactURLs(cp.NATS.URL)
	return &cp
}

// redactURLs masks the password of each URL in a comma-separated list.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		t := strings.TrimSpace(p)
		if !strings.Contains(t, "://") {
			continue
		}
		u, err := url.Parse(t)
		if err != nil {
			parts[i] = Redacted // unparseable: it might still hold a password
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Redacted)
		} else if u.User != nil && u.Scheme != "redis" && u.Scheme != "rediss" {
			// nats://TOKEN@host: a lone user part is a token.
			u.User = url.User(Redacted)
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
