package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at build time: -ldflags "-X main.version=... -X main.commit=...
// -X main.date=..." (the Makefile and deploy/docker/Dockerfile do). Without
// them commit and date come from the build info Go records from git
// (vcs.revision, vcs.time), when the build had it.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// mainDeps are the libraries whose versions matter in a bug report: the
// binlog reader and the four servers' clients.
var mainDeps = []string{
	"github.com/go-mysql-org/go-mysql",
	"github.com/jackc/pgx/v5",
	"github.com/redis/go-redis/v9",
	"github.com/nats-io/nats.go",
	"github.com/pelletier/go-toml/v2",
	"github.com/prometheus/client_golang",
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if c := buildInfo().Commit; len(c) >= 12 {
		return "dev-" + c[:12]
	}
	return version
}

// versionInfo is what `dialsync version` prints (--json: this object).
type versionInfo struct {
	Version   string            `json:"version"`
	Commit    string            `json:"commit"`     // "" when unknown
	Modified  bool              `json:"modified"`   // built from a work tree with changes
	BuildDate string            `json:"build_date"` // RFC 3339; "" when unknown
	Go        string            `json:"go"`
	Platform  string            `json:"platform"`
	Deps      map[string]string `json:"dependencies"`
}

func buildInfo() versionInfo {
	v := versionInfo{Version: version, Commit: commit, BuildDate: date, Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, Deps: map[string]string{}}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if v.Commit == "" {
				v.Commit = s.Value
			}
		case "vcs.time":
			if v.BuildDate == "" {
				v.BuildDate = s.Value
			}
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	for _, d := range bi.Deps {
		for _, m := range mainDeps {
			if d.Path == m {
				if d.Replace != nil {
					d = d.Replace
				}
				v.Deps[m] = d.Version
			}
		}
	}
	return v
}

const versionUsage = `usage: dialsync version [--json]   (also: dialsync --version, dialsync -v)

Prints the version, the commit and date it was built from, the Go version
and platform, and the versions of the main libraries (the binlog reader and
the servers' clients): what a bug report needs.

  --json  print one JSON object

Exit status: 0, or 2 for bad arguments.`

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, versionUsage) }
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	v := buildInfo()
	v.Version = buildVersion()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	orUnknown := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	c := orUnknown(v.Commit)
	if v.Modified {
		c += " (with uncommitted changes)"
	}
	fmt.Fprintf(stdout, "dialsync %s\ncommit:    %s\nbuilt:     %s\ngo:        %s %s\nlibraries:\n", v.Version, c, orUnknown(v.BuildDate), v.Go, v.Platform)
	for _, m := range mainDeps {
		if ver, ok := v.Deps[m]; ok {
			fmt.Fprintf(stdout, "  %s %s\n", m, ver)
		}
	}
	return nil
}
