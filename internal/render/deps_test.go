package render

import (
	"go/build"
	"strings"
	"testing"
)

// TestNoStoreImport keeps rendering independent of the store: render (and
// what it imports) may use the query layer's values, never read them.
func TestNoStoreImport(t *testing.T) {
	const mod = "github.com/obs-agent/obs-agent/"
	seen := map[string]bool{}
	var walk func(path, from string)
	walk = func(path, from string) {
		if seen[path] {
			return
		}
		seen[path] = true
		if path == mod+"internal/store" || path == mod+"internal/query" {
			t.Errorf("%s imports %s: rendering must not depend on the store", from, path)
			return
		}
		p, err := build.Default.Import(path, ".", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, mod) {
				walk(imp, path)
			}
		}
	}
	walk(mod+"internal/render", "")
	if !seen[mod+"internal/result"] {
		t.Error("render no longer imports internal/result: the test walks the wrong package")
	}
}
