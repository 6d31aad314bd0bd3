// Package glob owns the pattern language of obs-agent: shell-style globs
// over full Go symbol names, used to select functions to trace and to
// filter queries. '*' matches any run of characters (including none) and
// '?' exactly one character; every other byte is literal, so the '(', ')',
// '*' receivers and '[', ']' type arguments of Go symbol names need no
// escaping.
package glob

import (
	"strings"
	"unicode/utf8"
)

// Glob is a compiled shell-style pattern over Go symbol names. '*' matches
// any run of characters (including none) and '?' exactly one character;
// every other byte is literal, so the '(', ')', '*' receivers and '[', ']'
// type arguments of Go symbol names need no escaping. A '*' inside a name,
// as in "main.(*T).M", is still a wildcard: it matches the literal '*' too.
type Glob struct {
	pat string // consecutive '*' collapsed to one
	// prefix is the literal text before the first wildcard and suffix the
	// literal text after the last '*' when no '?' follows it. They let
	// Match reject most names with two comparisons.
	prefix string
	suffix string
	// wild is false for a pattern with no wildcard at all, which matches
	// only the identical name.
	wild bool
	// prefixOnly is true for "literal*": a prefix test decides.
	prefixOnly bool
}

// Compile compiles a pattern; every string is a valid pattern.
func Compile(pat string) Glob {
	var b strings.Builder
	b.Grow(len(pat))
	for i := 0; i < len(pat); i++ {
		if pat[i] == '*' && i > 0 && pat[i-1] == '*' {
			continue
		}
		b.WriteByte(pat[i])
	}
	g := Glob{pat: b.String()}
	first := strings.IndexAny(g.pat, "*?")
	if first < 0 {
		g.prefix = g.pat
		return g
	}
	g.wild = true
	g.prefix = g.pat[:first]
	if last := strings.LastIndexAny(g.pat, "*?"); g.pat[last] == '*' {
		g.suffix = g.pat[last+1:]
	}
	g.prefixOnly = first == len(g.pat)-1 && g.pat[first] == '*'
	return g
}

// LiteralPrefix is the text a matching name must start with.
func (g *Glob) LiteralPrefix() string { return g.prefix }

// Match reports whether name matches the whole pattern. A '?' consumes one
// UTF-8 encoded rune (one byte of an invalid sequence).
func (g *Glob) Match(name string) bool {
	if !g.wild {
		return name == g.pat
	}
	if !strings.HasPrefix(name, g.prefix) {
		return false
	}
	if g.prefixOnly {
		return true
	}
	if len(name) < len(g.prefix)+len(g.suffix) || !strings.HasSuffix(name, g.suffix) {
		return false
	}
	return matchWild(g.pat[len(g.prefix):], name[len(g.prefix):])
}

// matchWild is the classic linear-space wildcard match: on a mismatch it
// retries from the most recent '*', letting that star swallow one more
// character. Earlier stars never need revisiting, so the cost is
// O(len(pat)*len(name)) at worst and close to linear for real names.
func matchWild(pat, name string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pat) {
			switch c := pat[p]; {
			case c == '*':
				starP, starN = p, n
				p++
				continue
			case c == '?':
				_, w := utf8.DecodeRuneInString(name[n:])
				p++
				n += w
				continue
			case c == name[n]:
				p++
				n++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		_, w := utf8.DecodeRuneInString(name[starN:])
		starN += w
		p, n = starP+1, starN
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}

// Match reports whether name matches pattern, compiling it each time; use
// Compile for many names.
func Match(pattern, name string) bool {
	g := Compile(pattern)
	return g.Match(name)
}
