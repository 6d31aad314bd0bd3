package selector

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// maxSuggestions is how many close names a NoMatchError offers.
const maxSuggestions = 5

// NoMatchError says a pattern matched no function.
type NoMatchError struct {
	Pattern string
	Binary  string
	// Suggestions are up to 5 names close to the pattern, closest first.
	Suggestions []string
	// GeneratedOnly is set when the pattern matches only runtime or
	// compiler-generated functions, which it doesn't name explicitly.
	GeneratedOnly bool
}

func (e *NoMatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pattern %s matches no function in %s", validate.Quote(e.Pattern), e.Binary)
	if e.GeneratedOnly {
		b.WriteString(" (it matches only runtime or compiler-generated functions, which a pattern must name by package, e.g. 'runtime.*')")
	}
	if len(e.Suggestions) > 0 {
		fmt.Fprintf(&b, "; did you mean: %s?", strings.Join(e.Suggestions, ", "))
	}
	fmt.Fprintf(&b, " (run 'obs-agent list --binary %s' to see all)", e.Binary)
	return b.String()
}

// Is makes errors.Is(err, ErrNoMatch) true.
func (e *NoMatchError) Is(target error) bool { return target == ErrNoMatch }

func noMatch(bin *symbols.Binary, p *Pattern) error {
	e := &NoMatchError{Pattern: p.String(), Binary: bin.Path}
	// A match among generated functions the pattern doesn't name
	// explicitly is the likeliest explanation: offer those first.
	for _, f := range bin.Funcs {
		if f.Generated && p.Match(f.Name) && len(e.Suggestions) < maxSuggestions {
			e.GeneratedOnly = true
			e.Suggestions = append(e.Suggestions, f.Name)
		}
	}
	if e.GeneratedOnly {
		return e
	}
	names := make([]string, 0, len(bin.Funcs)+len(bin.InlinedOnly()))
	for _, f := range bin.Funcs {
		if !f.Generated || p.NamesExplicitly(f.Name) {
			names = append(names, f.Name)
		}
	}
	names = append(names, bin.InlinedOnly()...)
	e.Suggestions = suggest(p.Glob, names, maxSuggestions)
	return e
}

// suggest returns up to n names closest to the glob by globDistance, closest
// first, leaving out names too far to be a plausible typo.
func suggest(pat string, names []string, n int) []string {
	lpat := strings.ToLower(pat)
	literal := len(strings.ReplaceAll(strings.ReplaceAll(pat, "*", ""), "?", ""))
	maxDist := max(2, literal/4)
	type cand struct {
		name string
		dist int
	}
	var cs []cand
	seen := map[string]bool{}
	var row []int
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		var d int
		d, row = globDistance(lpat, strings.ToLower(name), row)
		if d <= maxDist {
			cs = append(cs, cand{name, d})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.dist, b.dist), cmp.Compare(len(a.name), len(b.name)), strings.Compare(a.name, b.name))
	})
	out := make([]string, 0, min(n, len(cs)))
	for i := 0; i < len(cs) && i < n; i++ {
		out = append(out, cs[i].name)
	}
	return out
}

// globDistance is the edit distance between a glob and a name, where '*'
// absorbs any run of characters and '?' any one byte for free: the fewest
// byte insertions, deletions and substitutions that make name match pat. It
// is 0 exactly when the glob matches (for ASCII). row is scratch space
// reused between calls; the grown slice is returned.
func globDistance(pat, name string, row []int) (int, []int) {
	// row[j] is the distance between the pattern so far and name[:j].
	if cap(row) < len(name)+1 {
		row = make([]int, len(name)+1)
	}
	row = row[:len(name)+1]
	for j := range row {
		row[j] = j
	}
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		diag := row[0] // distance of pat[:i] vs name[:j-1]
		if c != '*' {
			row[0]++
		}
		for j := 1; j <= len(name); j++ {
			up := row[j] // pat[:i] vs name[:j]
			var d int
			if c == '*' {
				d = min(up, row[j-1])
			} else {
				sub := diag
				if c != '?' && c != name[j-1] {
					sub++
				}
				d = min(sub, up+1, row[j-1]+1)
			}
			diag = up
			row[j] = d
		}
	}
	return row[len(name)], row
}
