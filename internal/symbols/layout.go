package symbols

import (
	"debug/dwarf"
	"fmt"
)

// Layout is where the runtime structures that obs-agent relies on lie, in
// bytes. It is the same on amd64 and arm64: the fields involved are
// pointers, uintptrs and fixed-size integers, so every 64-bit port shares
// it (TestLayoutTable checks an arm64 build too).
type Layout struct {
	// Goid is runtime.g.goid, read by the BPF programs from the g
	// pointer (R14 / X28) to name the goroutine.
	Goid uint64
	// Stack is runtime.g.stack and StackHi is runtime.stack.hi: the BPF
	// programs read g.stack.lo and g.stack.hi as g's first two words in
	// the same read as goid, so a release that moves them must be
	// refused, not guessed (see checkFixed).
	Stack, StackHi uint64
	// PanicSize is sizeof(runtime._panic) and PanicArg the offset of its
	// arg (the panic value): 56 and 8 up to Go 1.21, 104 and 8 from 1.22,
	// arg at 0 from 1.26, and Go 1.27 shrank _panic to 96 bytes. A reader
	// of a panic in flight must take both from here.
	PanicSize, PanicArg uint64
}

// layoutRow is one Go minor release of the layout table and the release
// whose DWARF proved it.
type layoutRow struct {
	minor      int    // Go 1.minor
	verifiedBy string // toolchain that TestLayoutTable builds to check the row
	Layout
}

// layoutTable is used for binaries without DWARF (-ldflags=-w or -s -w),
// which is most production builds. Every row is checked by
// TestLayoutTable, which builds a program with the row's toolchain, reads
// these fields from its DWARF (4 and 5) and compares. Supporting a new
// release is one new row; CI then proves it. A function, so the table
// cannot be mutated.
func layoutTable() []layoutRow {
	return []layoutRow{
		{17, "go1.17.13", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 56, PanicArg: 8}},
		{18, "go1.18.10", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 56, PanicArg: 8}},
		{19, "go1.19.13", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 56, PanicArg: 8}},
		{20, "go1.20.14", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 56, PanicArg: 8}},
		{21, "go1.21.13", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 56, PanicArg: 8}},
		{22, "go1.22.12", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 104, PanicArg: 8}},
		{23, "go1.23.12", Layout{Goid: 160, Stack: 0, StackHi: 8, PanicSize: 104, PanicArg: 8}},
		{24, "go1.24.13", Layout{Goid: 160, Stack: 0, StackHi: 8, PanicSize: 104, PanicArg: 8}},
		{25, "go1.25.10", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 104, PanicArg: 8}},
		{26, "go1.26.10", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 104, PanicArg: 0}},
		{27, "go1.27.4", Layout{Goid: 152, Stack: 0, StackHi: 8, PanicSize: 96, PanicArg: 0}},
	}
}

// VerifiedToolchains lists the toolchain of every row of the layout
// table, oldest first: the Go releases a binary without DWARF can come
// from.
func VerifiedToolchains() []string {
	var out []string
	for _, r := range layoutTable() {
		out = append(out, r.verifiedBy)
	}
	return out
}

// layoutFor returns the table's layout for a Go version. A version outside
// the verified table is an error: never guess.
func layoutFor(version string) (Layout, error) {
	maj, min, ok := parseGoVersion(version)
	if !ok || maj != 1 {
		return Layout{}, fmt.Errorf("runtime layout: no DWARF and go version %q unknown", version)
	}
	tab := layoutTable()
	for _, r := range tab {
		if r.minor == min {
			return r.Layout, nil
		}
	}
	return Layout{}, fmt.Errorf("runtime layout: the binary has no DWARF and %s is not in the verified table (go1.%d to go1.%d); build it without -w, or use an obs-agent that knows %s",
		version, tab[0].minor, tab[len(tab)-1].minor, version)
}

// checkFixed refuses a layout that breaks what the BPF programs assume
// without reading it from the configuration: g.stack.lo and g.stack.hi as
// g's first two words.
func (l Layout) checkFixed() error {
	if l.Stack != 0 || l.StackHi != 8 {
		return fmt.Errorf("runtime layout: runtime.g.stack at %d with hi at +%d, obs-agent needs them at 0 and +8", l.Stack, l.StackHi)
	}
	return nil
}

// layoutFields names the runtime struct members that make up a Layout, for
// the DWARF walk.
var layoutFields = map[string]map[string]func(*Layout) *uint64{
	"runtime.g": {
		"goid":  func(l *Layout) *uint64 { return &l.Goid },
		"stack": func(l *Layout) *uint64 { return &l.Stack },
	},
	"runtime.stack": {
		"hi": func(l *Layout) *uint64 { return &l.StackHi },
	},
	"runtime._panic": {
		"arg": func(l *Layout) *uint64 { return &l.PanicArg },
	},
}

// layoutSizes names the runtime structs whose size is part of a Layout.
var layoutSizes = map[string]func(*Layout) *uint64{
	"runtime._panic": func(l *Layout) *uint64 { return &l.PanicSize },
}

// layoutSeen counts what a DWARF walk found; the layout is taken from
// DWARF only when every field was there.
type layoutSeen struct {
	l     Layout
	found map[string]bool // "struct.member" or "struct" for sizes
}

func (s *layoutSeen) complete() bool {
	n := len(layoutSizes)
	for _, m := range layoutFields {
		n += len(m)
	}
	return len(s.found) == n
}

// runtimeStructWalk follows the DWARF walk through the runtime structs of
// layoutFields; each is taken from its first definition.
type runtimeStructWalk struct {
	name  string // struct being walked, "" if none
	depth int
}

func (w *runtimeStructWalk) enter(e *dwarf.Entry, depth int, s *layoutSeen) {
	n, _ := e.Val(dwarf.AttrName).(string)
	_, hasFields := layoutFields[n]
	size, hasSize := layoutSizes[n]
	if !hasFields && !hasSize {
		return
	}
	if s.found == nil {
		s.found = map[string]bool{}
	}
	if hasSize && !s.found[n] {
		if v, ok := e.Val(dwarf.AttrByteSize).(int64); ok && v > 0 {
			*size(&s.l) = uint64(v)
			s.found[n] = true
		}
	}
	if hasFields && e.Children && w.name == "" {
		w.name, w.depth = n, depth
	}
}

func (w *runtimeStructWalk) member(e *dwarf.Entry, depth int, s *layoutSeen) {
	if w.name == "" || depth != w.depth+1 {
		return
	}
	n, _ := e.Val(dwarf.AttrName).(string)
	field, ok := layoutFields[w.name][n]
	key := w.name + "." + n
	if !ok || s.found[key] {
		return
	}
	if loc, ok := e.Val(dwarf.AttrDataMemberLoc).(int64); ok && loc >= 0 {
		*field(&s.l) = uint64(loc)
		s.found[key] = true
	}
}

// leave is called at the end of a DIE's children, at depth.
func (w *runtimeStructWalk) leave(depth int) {
	if w.name != "" && depth <= w.depth {
		w.name = ""
	}
}
