package store

import "unicode/utf8"

// MatchGlob reports whether name matches pattern with the same rules as
// function selection: '*' matches any run of characters, including none and
// including '/', '.', '(' and ')'; '?' matches exactly one character (one
// UTF-8 rune); every other byte is literal. In particular '[' and ']' are
// literal, because Go symbol names use them for type arguments
// ("main.Map[go.shape.int]"). A '*' in the pattern is always a wildcard, so
// "main.(*T).M" also matches the literal receiver star.
func MatchGlob(pattern, name string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) {
			switch c := pattern[p]; {
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
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
