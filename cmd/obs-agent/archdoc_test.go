package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestArchitectureDoc checks docs/architecture.md's table of packages
// against the tree, so that the doc stays true when either changes: every
// package of the module (a directory of non-test Go files under cmd/ or
// internal/, outside nested modules and testdata) has a row, every row
// names such a package, and every Go file a row names (`host.go`, write.go)
// exists in that package or in the packages below it.
func TestArchitectureDoc(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	rowRE := regexp.MustCompile("(?m)^\\| `((?:cmd|internal)/[a-z0-9/-]+)` \\| (.*) \\|$")
	rows := map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(string(doc), -1) {
		if _, dup := rows[m[1]]; dup {
			t.Errorf("architecture.md: two rows for %s", m[1])
		}
		rows[m[1]] = m[2]
	}
	pkgs := map[string]bool{}
	for _, top := range []string{"cmd", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			if d.IsDir() {
				if d.Name() == "testdata" || (rel != top && fileExists(filepath.Join(path, "go.mod"))) {
					return filepath.SkipDir // test programs, and modules of their own
				}
				return nil
			}
			if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
				pkgs[filepath.ToSlash(filepath.Dir(rel))] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for p := range pkgs {
		// A package nested in another (internal/otlp/otlptest) may be
		// described in its parent's row.
		if _, ok := rows[p]; !ok && !strings.Contains(rows[filepath.Dir(p)], "`"+p+"`") {
			t.Errorf("architecture.md has no row for package %s", p)
		}
	}
	fileRE := regexp.MustCompile(`\b([a-z0-9_]+\.go)\b`)
	for p, text := range rows {
		if !pkgs[p] {
			t.Errorf("architecture.md has a row for %s, which is not a package of the module", p)
			continue
		}
		for _, m := range fileRE.FindAllStringSubmatch(text, -1) {
			if !fileUnder(filepath.Join(root, p), m[1]) {
				t.Errorf("architecture.md's row for %s names %s, which is not in it", p, m[1])
			}
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// fileUnder reports whether a file called name is in dir or below it.
func fileUnder(dir, name string) bool {
	found := false
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}
