package glob

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pat, name string
		want      bool
	}{
		{"main.main", "main.main", true},
		{"main.main", "main.main.func1", false},
		{"main.*", "main.main.func1", true},
		{"main.*", "main.", true},
		{"main.*", "mainx.y", false},
		{"*", "", true},
		{"*", "github.com/acme/api.(*Server).Handle", true},
		{"?", "", false},
		{"?", "é", true},
		{"??", "é", false},
		{"main.?", "main.é", true},
		{"*.String", "main.(*T).String", true},
		{"*.String", "main.(*T).Stringer", false},
		{"*String*", "main.(*T).Stringer", true},
		// '(', '*', ')', '[', ']' are literal: no character classes.
		{"main.(*T).Inc", "main.(*T).Inc", true},
		{"main.(*T).Inc", "main.(xT).Inc", true}, // '*' is still a wildcard
		{"main.(*T).Inc", "main.T.Inc", false},
		{"main.Map[go.shape.int]", "main.Map[go.shape.int]", true},
		{"main.Map[go.shape.int]", "main.Map[g]", false},
		{"main.Map[*]", "main.Map[go.shape.string]", true},
		{"main.[ab]", "main.a", false},
		{"main.[ab]", "main.[ab]", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbYcZ", false},
		{"a*b*c", "acb", false},
		{"a**b", "ab", true},
		{"a*?b", "ab", false},
		{"a*?b", "axb", true},
		{"*a*a*a*", "aaa", true},
		{"*a*a*a*", "aa", false},
		{"*ab", "aab", true},
		{"*aab", "aaab", true},
		{"net/http.(*Server).*", "net/http.(*Server).Serve", true},
		{"github.com/acme/*", "github.com/acme/api/v2.Handler", true},
		{`a\*`, `a\b`, true}, // no escapes: '\' is literal
		{`a\*`, `a*`, false},
	}
	for _, tt := range tests {
		g := Compile(tt.pat)
		if got := g.Match(tt.name); got != tt.want {
			t.Errorf("glob %q match %q = %v, want %v", tt.pat, tt.name, got, tt.want)
		}
		if got := refMatch(tt.pat, tt.name); got != tt.want {
			t.Errorf("reference %q match %q = %v, want %v (test is wrong)", tt.pat, tt.name, got, tt.want)
		}
	}
}

// refGlob turns a glob into an anchored regexp by quoting every literal.
func refGlob(pat string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?s)\A`)
	for _, r := range pat {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`\z`)
	return regexp.MustCompile(b.String())
}

func refMatch(pat, name string) bool { return refGlob(pat).MatchString(name) }

func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"main.*", "main.main"},
		{"*.String", "main.(*T).String"},
		{"a*?b", "axb"},
		{"*a*a*a*", "aaa"},
		{"main.Map[*]", "main.Map[go.shape.int]"},
		{"?é*", "xé"},
		{"", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pat, name string) {
		// Symbol names are UTF-8, and the regexp reference reads invalid
		// bytes as U+FFFD, which would match a literal U+FFFD.
		if !utf8.ValidString(pat) || !utf8.ValidString(name) || len(pat) > 64 || len(name) > 256 {
			t.Skip()
		}
		g := Compile(pat)
		got, want := g.Match(name), refMatch(pat, name)
		if got != want {
			t.Fatalf("glob %q match %q = %v, reference says %v", pat, name, got, want)
		}
		if got && !strings.HasPrefix(name, g.LiteralPrefix()) {
			t.Fatalf("match %q of %q lacks literal prefix %q", name, pat, g.LiteralPrefix())
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	names := []string{
		"main.main", "main.(*Counter).Inc", "github.com/acme/api/v2.(*Server).Handle",
		"net/http.(*conn).serve", "main.Map[go.shape.int]", "encoding/json.(*decodeState).object",
	}
	pats := []Glob{Compile("main.*"), Compile("*.Handle"), Compile("github.com/acme/*"), Compile("*json*object")}
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range names {
			for i := range pats {
				pats[i].Match(n)
			}
		}
	}
}

// TestMatchCases are the cases the store once kept for its own matcher.
func TestMatchCases(t *testing.T) {
	cases := []struct {
		pat, name string
		want      bool
	}{
		{"main.*", "main.main", true},
		{"main.*", "main.(*T).M", true},
		{"*", "github.com/a/b.F", true},
		{"github.com/*/b.*", "github.com/a/x/b.F", true},
		{"main.?", "main.F", true},
		{"main.?", "main.FG", false},
		{"main.Map[go.shape.int]", "main.Map[go.shape.int]", true},
		{"main.Map[*]", "main.Map[go.shape.int]", true},
		{"main.Map[ab]", "main.Mapa", false},
		{"main.(*T).*", "main.(*T).Get", true},
		{"main.(*T).*", "main.(*U).Get", false},
		{"*.Get", "main.(*T).Get", true},
		{"", "", true},
		{"", "x", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"?", "é", true},
	}
	for _, c := range cases {
		if got := Match(c.pat, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pat, c.name, got, c.want)
		}
	}
}
