package doccheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"dialsync/internal/dbschema"
)

const root = "../../.."

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The schema version quoted in docs/troubleshooting.md's example message is
// the binary's.
func TestTroubleshootingSchemaVersion(t *testing.T) {
	doc := read(t, "docs/troubleshooting.md")
	m := regexp.MustCompile(`this binary knows up to (\d+)`).FindAllStringSubmatch(doc, -1)
	if len(m) == 0 {
		t.Fatal(`docs/troubleshooting.md no longer quotes "this binary knows up to N": drop this test with the row`)
	}
	for _, g := range m {
		if n, _ := strconv.Atoi(g[1]); n != dbschema.LatestVersion() {
			t.Errorf("docs/troubleshooting.md says %q; the binary's latest schema version is %d", g[0], dbschema.LatestVersion())
		}
	}
}

// packages lists every directory holding Go code (tests included), as
// paths from the repository root.
func packages(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && rel != "." || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			seen[filepath.ToSlash(filepath.Dir(rel))] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// The README's Layout section names every package of the tree by its path
// (a `dir/*` entry covers the packages under dir) and no path that is gone.
func TestReadmeLayout(t *testing.T) {
	readme := read(t, "README.md")
	_, layout, ok := strings.Cut(readme, "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no ## Layout section")
	}
	layout, _, _ = strings.Cut(layout, "\n## ")
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`([a-z][a-z0-9_/.*-]*)`").FindAllStringSubmatch(layout, -1) {
		if !strings.Contains(m[1], "/") {
			continue // a command or a file named in passing, not a path
		}
		p := strings.TrimSuffix(m[1], "/")
		named[p] = true
		if strings.HasSuffix(p, "/*") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("README layout names %q, which does not exist", m[1])
		}
	}
	for _, pkg := range packages(t) {
		if pkg == "." || named[pkg] {
			continue
		}
		covered := false
		for p := range named {
			if dir, ok := strings.CutSuffix(p, "/*"); ok && strings.HasPrefix(pkg, dir+"/") {
				covered = true
			}
		}
		if !covered {
			t.Errorf("README layout does not name package %s", pkg)
		}
	}
}

// Repository paths the docs name exist.
func TestDocPathsExist(t *testing.T) {
	// Paths in go-mysql's repository, linked from docs/canal.md.
	external := map[string]bool{"canal/canal.go": true, "canal/rows.go": true, "canal/sync.go": true}
	ref := regexp.MustCompile(`\b(?:cmd|internal|deploy|scripts|docs|checkpoint|canal|handlers|notice|change|clients|schemas|bench)/[A-Za-z0-9_./-]*[A-Za-z0-9_]`)
	for _, doc := range []string{"README.md", "docs/design.md", "docs/canal.md", "docs/notices.md", "docs/troubleshooting.md", "config.toml"} {
		for _, p := range ref.FindAllString(read(t, doc), -1) {
			if external[p] || strings.HasPrefix(p, "notice/cache") { // "missing (notice/cache)": a table header
				continue
			}
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s names %s, which does not exist", doc, p)
			}
		}
	}
}
