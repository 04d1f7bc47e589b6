package config

import (
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Where a key's effective value came from (KeySource.From).
const (
	FromDefault = "default"     // built in (Default)
	FromFile    = "file"        // the TOML document
	FromEnv     = "environment" // a DIALSYNC_* variable (KeySource.Env names it)
)

// KeySource is one key of the effective configuration: its value (secrets
// redacted as in Redacted) and where it came from.
type KeySource struct {
	Key   string `json:"key"`   // TOML form: "source.server_id"
	Value any    `json:"value"` // as TOML would write it (durations and sizes as strings)
	From  string `json:"from"`  // FromDefault, FromFile or FromEnv
	Env   string `json:"env,omitempty"`
	// SecretFile names the <key>_file whose contents are the value (the
	// value itself is then shown empty).
	SecretFile string `json:"secret_file,omitempty"`
}

// Sources is every key of an effective configuration in declaration order
// with its redacted value and origin (LoadSources).
type Sources []KeySource

// sources says where each key's value came from: the environment beats the
// file, the file beats the default (the precedence Parse applies).
func (c *Config) sources() Sources {
	cp := c.redactedCopy()
	fs := cp.fields()
	byKey := make(map[string]field, len(fs))
	for _, f := range fs {
		byKey[f.Key] = f
	}
	out := make(Sources, 0, len(fs))
	for _, f := range fs {
		ks := KeySource{Key: f.Key, Value: f.Value.Interface(), From: FromDefault}
		switch env, ok := c.origin[f.Key]; {
		case ok:
			ks.From, ks.Env = FromEnv, env
		case c.set[f.Key]: // keys the file sets, recorded while decoding it
			ks.From = FromFile
		}
		if ff, ok := byKey[f.Key+"_file"]; ok && f.Secret && ff.Value.String() != "" {
			ks.SecretFile = ff.Key
		}
		out = append(out, ks)
	}
	return out
}

// TOML writes the configuration as TOML, secrets redacted as in Redacted,
// with a comment on each key saying where its value came from:
// `server_id = 4242  # file`, `listen = ""  # environment DIALSYNC_HTTP_LISTEN`.
// The output parses again as it is.
func (s Sources) TOML() string {
	var b strings.Builder
	section := ""
	for _, ks := range s {
		i := strings.LastIndexByte(ks.Key, '.')
		sec, name := ks.Key[:i], ks.Key[i+1:]
		if sec != section {
			if section != "" {
				b.WriteByte('\n')
			}
			fmt.Fprintf(&b, "[%s]\n", sec)
			section = sec
		}
		from := ks.From
		if ks.Env != "" {
			from += " " + ks.Env
		}
		if ks.SecretFile != "" {
			from += "; read from the file named by " + ks.SecretFile
		}
		fmt.Fprintf(&b, "%s = %s  # %s\n", name, tomlValue(ks.Value), from)
	}
	return b.String()
}

// tomlValue writes v as a TOML value on one line (go-toml escapes newlines
// in strings, so a multi-line queue_sql stays on its line).
func tomlValue(v any) string {
	out, err := toml.Marshal(map[string]any{"v": v})
	if err != nil {
		// Only plain values reach here; never fall back to fmt of a
		// value that might be a secret.
		return "'' # cannot render: " + err.Error()
	}
	s := strings.TrimSuffix(strings.TrimPrefix(string(out), "v = "), "\n")
	if strings.Contains(s, "\n") { // a list go-toml chose to indent
		s = strings.Join(strings.Fields(s), " ")
	}
	return s
}
