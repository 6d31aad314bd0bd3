// Package selector chooses the functions of a Go binary to trace from
// include (-f) and exclude (-x) glob patterns over full symbol names, and
// checks the choice before anything is attached: every pattern must match
// something, and the probe sites must stay under a limit.
package selector

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// DefaultMaxProbes is the default limit on probe sites (one entry plus one
// per RET instruction, summed over the selected functions).
const DefaultMaxProbes = 10000

// Sentinel errors for errors.Is; the concrete errors are *NoMatchError and
// *TooManyProbesError.
var (
	ErrNoMatch       = errors.New("pattern matches no function")
	ErrTooManyProbes = errors.New("too many probe sites")
)

// Options tune Select. Start from DefaultOptions: the zero SampleRate means
// "keep no successful call".
type Options struct {
	// MaxProbes limits the probe sites; 0 means DefaultMaxProbes and a
	// negative value means no limit.
	MaxProbes int
	// SampleRate, from 0 to 1, is the share of successful calls kept for
	// functions whose pattern has no "@RATE".
	SampleRate float64
	// Generated lets patterns select runtime and compiler-generated
	// functions without naming them explicitly (`list --all`).
	Generated bool
}

// DefaultOptions returns the options used without flags.
func DefaultOptions() Options {
	return Options{MaxProbes: DefaultMaxProbes, SampleRate: 1}
}

// Selection is the outcome of Select.
type Selection struct {
	// Funcs are the selected probeable functions, in the binary's order.
	Funcs []Selected
	// Sites is the number of probe sites Funcs need: sum of 1+len(Rets).
	Sites int
	// Skipped are matched functions that can't be probed, with the reason,
	// sorted by name.
	Skipped []Skipped
}

// Selected is one function to trace.
type Selected struct {
	Func       *symbols.Func
	SampleRate float64 // share of successful calls to keep, 0 to 1
}

// Skipped is a matched function that can't be probed.
type Skipped struct {
	Name   string
	Func   *symbols.Func // nil when the function has no body of its own
	Reason string
}

// ReasonInlinedOnly is the Skipped reason for functions that only exist
// inlined into their callers.
const ReasonInlinedOnly = "inlined at every call site (no out-of-line code to probe)"

// Select applies the include and exclude patterns to bin. A function is
// selected when some include pattern selects it (see Pattern.Selects) and no
// exclude pattern matches it. When several include patterns select a
// function, the one with the longest literal prefix (the most specific) sets
// its sample rate, the later one on a tie; without "@RATE" it is
// opts.SampleRate.
//
// Every pattern must match some function, or Select returns a *NoMatchError
// with suggestions. Functions that DWARF shows only inlined count as matches
// and are reported in Skipped. When the probe sites exceed opts.MaxProbes,
// Select returns a *TooManyProbesError.
func Select(bin *symbols.Binary, include, exclude []string, opts Options) (*Selection, error) {
	if opts.SampleRate < 0 || opts.SampleRate > 1 || math.IsNaN(opts.SampleRate) {
		return nil, fmt.Errorf("selector: sample rate %v is not between 0 and 1", opts.SampleRate)
	}
	inc, exc, err := ParsePatterns(include, exclude)
	if err != nil {
		return nil, err
	}

	incHit := make([]bool, len(inc))
	excHit := make([]bool, len(exc))
	sel := &Selection{}
	consider := func(name string, generated bool) (rate float64, ok bool) {
		best := -1
		for i := range inc {
			if inc[i].Selects(name, generated && !opts.Generated) {
				incHit[i] = true
				if best < 0 || len(inc[i].g.LiteralPrefix()) >= len(inc[best].g.LiteralPrefix()) {
					best = i
				}
			}
		}
		if best < 0 {
			return 0, false
		}
		excluded := false
		for i := range exc {
			if exc[i].Match(name) {
				excHit[i] = true
				excluded = true
			}
		}
		if excluded {
			return 0, false
		}
		if inc[best].HasRate {
			return inc[best].SampleRate, true
		}
		return opts.SampleRate, true
	}

	for _, f := range bin.Funcs {
		rate, ok := consider(f.Name, f.Generated)
		if !ok {
			continue
		}
		if !f.Probeable {
			sel.Skipped = append(sel.Skipped, Skipped{Name: f.Name, Func: f, Reason: f.Reason})
			continue
		}
		sel.Funcs = append(sel.Funcs, Selected{Func: f, SampleRate: rate})
		sel.Sites += 1 + len(f.Rets)
	}
	for _, name := range bin.InlinedOnly() {
		if _, ok := consider(name, generatedName(name)); ok {
			sel.Skipped = append(sel.Skipped, Skipped{Name: name, Reason: ReasonInlinedOnly})
		}
	}
	slices.SortFunc(sel.Skipped, func(a, b Skipped) int { return strings.Compare(a.Name, b.Name) })

	for i, hit := range incHit {
		if !hit {
			return nil, noMatch(bin, &inc[i])
		}
	}
	for i, hit := range excHit {
		if !hit && !matchesAny(bin, &exc[i]) {
			return nil, noMatch(bin, &exc[i])
		}
	}

	limit := opts.MaxProbes
	if limit == 0 {
		limit = DefaultMaxProbes
	}
	if limit > 0 && sel.Sites > limit {
		return nil, tooMany(sel, limit)
	}
	return sel, nil
}

// ParsePatterns parses the -f and -x patterns. Commands call it before
// anything else, so a bad pattern fails before a binary is read.
func ParsePatterns(include, exclude []string) (inc, exc []Pattern, err error) {
	if inc, err = parseAll(include); err != nil {
		return nil, nil, err
	}
	if exc, err = parseAll(exclude); err != nil {
		return nil, nil, err
	}
	for _, p := range exc {
		if p.HasRate {
			return nil, nil, fmt.Errorf("selector: exclude pattern %s: a sample rate only applies to -f patterns", validate.Quote(p.String()))
		}
	}
	return inc, exc, nil
}

func parseAll(ss []string) ([]Pattern, error) {
	ps := make([]Pattern, 0, len(ss))
	for _, s := range ss {
		p, err := Parse(s)
		if err != nil {
			return nil, fmt.Errorf("selector: %w", err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// matchesAny reports whether an exclude pattern matches any name at all,
// including ones no include pattern selected.
func matchesAny(bin *symbols.Binary, p *Pattern) bool {
	for _, f := range bin.Funcs {
		if p.Match(f.Name) {
			return true
		}
	}
	return slices.ContainsFunc(bin.InlinedOnly(), p.Match)
}

// TooManyProbesError says the selection needs more probe sites than allowed.
type TooManyProbesError struct {
	Funcs int // probeable functions selected
	Sites int // probe sites they need
	Limit int
	// Top are the packages contributing the most sites, at most 5.
	Top []PackageSites
}

// PackageSites is one package's share of the probe sites.
type PackageSites struct {
	Package string
	Sites   int
}

func (e *TooManyProbesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "patterns select %d functions needing %d probe sites, over the limit of %d; top packages:", e.Funcs, e.Sites, e.Limit)
	for i, p := range e.Top {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s (%d)", p.Package, p.Sites)
	}
	b.WriteString("; narrow the selection with -x PATTERN or raise --max-probes")
	return b.String()
}

// Is makes errors.Is(err, ErrTooManyProbes) true.
func (e *TooManyProbesError) Is(target error) bool { return target == ErrTooManyProbes }

func tooMany(sel *Selection, limit int) error {
	byPkg := map[string]int{}
	for _, s := range sel.Funcs {
		byPkg[record.PackageOf(s.Func.Name)] += 1 + len(s.Func.Rets)
	}
	top := make([]PackageSites, 0, len(byPkg))
	for p, n := range byPkg {
		top = append(top, PackageSites{p, n})
	}
	slices.SortFunc(top, func(a, b PackageSites) int {
		return cmp.Or(cmp.Compare(b.Sites, a.Sites), strings.Compare(a.Package, b.Package))
	})
	if len(top) > 5 {
		top = top[:5]
	}
	return &TooManyProbesError{Funcs: len(sel.Funcs), Sites: sel.Sites, Limit: limit, Top: top}
}
