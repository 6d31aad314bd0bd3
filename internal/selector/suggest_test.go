package selector

import (
	"testing"

	"github.com/obs-agent/obs-agent/internal/glob"
)

// FuzzDistanceZeroOnMatch: the suggestion metric is 0 whenever the glob
// matches (ASCII, where a byte is a character).
func FuzzDistanceZeroOnMatch(f *testing.F) {
	f.Add("main.*", "main.run")
	f.Add("*.Handle", "github.com/acme/api.(*S).Handle")
	f.Fuzz(func(t *testing.T, pat, name string) {
		if len(pat) > 64 || len(name) > 256 || !isASCII(pat) || !isASCII(name) {
			t.Skip()
		}
		g := glob.Compile(pat)
		if !g.Match(name) {
			return
		}
		if d, _ := globDistance(pat, name, nil); d != 0 {
			t.Fatalf("globDistance(%q, %q) = %d on a match", pat, name, d)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
