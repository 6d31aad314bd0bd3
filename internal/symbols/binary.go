package symbols

import (
	"bytes"
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Sentinel errors callers branch on. Open wraps them with context.
var (
	ErrNotELF          = errors.New("not an ELF executable")
	ErrNotGo           = errors.New("not a Go binary")
	ErrGoTooOld        = errors.New("go version too old: stack ABI (need go1.17+ on amd64, go1.18+ on arm64)")
	ErrUnsupportedArch = errors.New("unsupported architecture (only amd64 and arm64)")
)

// Binary is a parsed Go executable. It is immutable after Open.
type Binary struct {
	Path       string
	Arch       string // "amd64" or "arm64"
	GoVersion  string // from debug/buildinfo, e.g. "go1.22.12"
	MainModule string // main module path from buildinfo ("" if unknown)
	PIE        bool   // ELF type ET_DYN
	HasDWARF   bool
	HasSymtab  bool // .symtab present (false for -s builds)
	// Layout is where runtime.g.goid and the other runtime fields the
	// probes read lie; LayoutSource says where it came from: "dwarf", or
	// "table" (the verified table of Go releases) without DWARF.
	Layout       Layout
	LayoutSource string
	// Funcs is every function from .gopclntab, sorted by Entry.
	Funcs []*Func
	// Itabs maps an itab vaddr to the concrete type name for itabs that
	// implement error, from go:itab.* symbols and the .itablink section
	// (which stripped binaries keep).
	Itabs map[uint64]string

	types       *Types    // type descriptors; nil when unreadable
	segs        []segment // PT_LOAD segments with PF_X
	modules     []string  // main module + deps, for ModuleOf
	byName      map[string]*Func
	inlinedOnly []string
}

// segment is an executable PT_LOAD segment and its file bytes.
type segment struct {
	vaddr, off, filesz uint64
	data               []byte
}

// Func is one function from the pclntab.
type Func struct {
	Name      string   // full symbol name, e.g. main.(*Counter).Inc, main.Map[go.shape.int], main.main.func1
	Entry     uint64   // vaddr
	End       uint64   // vaddr (exclusive)
	Rets      []uint64 // vaddr of every RET instruction in [Entry, End)
	Generated bool     // runtime/compiler-generated
	Probeable bool
	// EntryOnly marks a probeable function with no RET (it only panics,
	// ends in os.Exit, or loops forever): it is traced by its entry
	// alone, and its call is closed by the panic that leaves it, by
	// runtime.Goexit, or at the end of the trace.
	EntryOnly bool
	Reason    string // why not probeable, when !Probeable
	// InlinedSites counts call sites where the compiler inlined this
	// function (DWARF DW_TAG_inlined_subroutine); -1 when unknown (no DWARF).
	InlinedSites int
	// ErrResult is where the function's error result is at RET time; nil
	// when it has none or it is unknown (no DWARF, unsizable types).
	ErrResult *ErrorResult
	// ErrSource says what ErrResult (or its certain absence) was read
	// from: ErrSourceDWARF, ErrSourceMethodType, or "" when unknown.
	ErrSource string
}

// ErrorResult locates an `error` result (an iface: itab word then data
// word) at a RET instruction.
type ErrorResult struct {
	InRegs bool
	// ItabReg and DataReg index the ABI integer register order (amd64: RAX,
	// RBX, RCX, RDI, RSI, R8, R9, R10, R11; arm64: R0..R15), when InRegs.
	ItabReg int
	DataReg int
	// StackOff is the byte offset from SP at the RET instruction to the
	// itab word (data word at +8), when !InRegs.
	StackOff int64
	Index    int // position of the error among the results (0-based)
}

// Open reads and fully analyses the Go executable at path. When it returns,
// every Func has Rets, Probeable and Reason filled (analysis is eager).
func Open(path string) (*Binary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	b, err := openBytes(path, data)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return b, nil
}

// OpenProgram is Open for a program a user named (attach, run, list): the
// errors a user can act on say what to do, once.
func OpenProgram(path string) (*Binary, error) {
	bin, err := Open(path)
	name := path
	if strings.HasPrefix(path, "/proc/") { // a running process: name its program
		if target, lerr := os.Readlink(path); lerr == nil {
			name = target
		}
	}
	switch {
	case err == nil:
		return bin, nil
	case errors.Is(err, ErrNotGo), errors.Is(err, ErrNotELF):
		return nil, fmt.Errorf("%s is not a Go program, and obs-agent traces only Go programs; "+
			"if it is a wrapper script, point at the Go binary it starts (%w)", name, err)
	case errors.Is(err, ErrGoTooOld):
		return nil, fmt.Errorf("%s was built by a Go release without the register ABI; rebuild it with go1.17 or later (%w)", name, err)
	}
	return nil, err
}

// Close releases the binary's buffers. The Binary must not be used after.
func (b *Binary) Close() error {
	b.segs = nil
	return nil
}

// Lookup returns the function with exactly this name, or nil.
func (b *Binary) Lookup(name string) *Func {
	return b.byName[name]
}

// InlinedOnly lists functions that DWARF shows inlined at call sites but
// that have no out-of-line body (so they are not in Funcs). Nil without
// DWARF.
func (b *Binary) InlinedOnly() []string {
	return b.inlinedOnly
}

// FileOffset converts a virtual address inside an executable PT_LOAD
// segment to a file offset (vaddr - seg.Vaddr + seg.Off), PIE or not.
func (b *Binary) FileOffset(vaddr uint64) (uint64, error) {
	for _, s := range b.segs {
		if vaddr >= s.vaddr && vaddr-s.vaddr < s.filesz {
			return vaddr - s.vaddr + s.off, nil
		}
	}
	return 0, fmt.Errorf("file offset of %#x: not in an executable segment", vaddr)
}

// ModuleOf returns the module a package belongs to, from the build info:
// the main module for package main (whose import path is "main", not under
// the module path) and for packages under the main module's path; the
// dependency whose path is pkg or the longest prefix of it ending at a
// "/"; "std" for the standard library (the module GOROOT/src declares);
// "" when none applies, e.g. for a binary without build info.
func (b *Binary) ModuleOf(pkg string) string {
	if pkg == "main" {
		return b.MainModule
	}
	best := ""
	for _, m := range b.modules {
		if len(m) > len(best) && (pkg == m || strings.HasPrefix(pkg, m+"/")) {
			best = m
		}
	}
	if best == "" && b.GoVersion != "" && isStdPackage(pkg) {
		return "std"
	}
	return best
}

// isStdPackage reports whether an import path is the standard library's:
// its first element has no dot (module paths outside GOROOT need one, and
// the build info lists any that do not), and it is not a compiler-made
// pseudo-package such as "type:" or "go:".
func isStdPackage(pkg string) bool {
	first, _, _ := strings.Cut(pkg, "/")
	return first != "" && first != "main" && !strings.ContainsAny(first, ".:")
}

// text returns the bytes of [start, end) from an executable segment.
func (b *Binary) text(start, end uint64) ([]byte, bool) {
	for _, s := range b.segs {
		if start >= s.vaddr && start-s.vaddr < s.filesz {
			lo := start - s.vaddr
			if end < start || end-s.vaddr > s.filesz || end-s.vaddr > uint64(len(s.data)) {
				return nil, false
			}
			return s.data[lo : end-s.vaddr], true
		}
	}
	return nil, false
}

// safely runs f, turning a panic inside the standard library's parsers
// (debug/elf, debug/dwarf, debug/buildinfo on hostile input) into an error.
func safely(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: malformed input: %v", what, r)
		}
	}()
	return f()
}

func openBytes(path string, data []byte) (*Binary, error) {
	if len(data) < 4 || !bytes.Equal(data[:4], []byte(elf.ELFMAG)) {
		return nil, ErrNotELF
	}
	var ef *elf.File
	if err := safely("parse elf", func() (err error) {
		ef, err = elf.NewFile(bytes.NewReader(data))
		return err
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotELF, err)
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return nil, fmt.Errorf("%w: ELF type %v", ErrNotELF, ef.Type)
	}
	b := &Binary{Path: path, PIE: ef.Type == elf.ET_DYN, Itabs: map[uint64]string{}}
	switch {
	case ef.Machine == elf.EM_X86_64 && ef.Class == elf.ELFCLASS64 && ef.Data == elf.ELFDATA2LSB:
		b.Arch = "amd64"
	case ef.Machine == elf.EM_AARCH64 && ef.Class == elf.ELFCLASS64 && ef.Data == elf.ELFDATA2LSB:
		b.Arch = "arm64"
	default:
		return nil, fmt.Errorf("%w: %v %v", ErrUnsupportedArch, ef.Machine, ef.Class)
	}

	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 {
			continue
		}
		if p.Off > uint64(len(data)) || p.Filesz > uint64(len(data))-p.Off {
			return nil, fmt.Errorf("%w: executable segment at %#x exceeds the file", ErrNotELF, p.Vaddr)
		}
		b.segs = append(b.segs, segment{vaddr: p.Vaddr, off: p.Off, filesz: p.Filesz, data: data[p.Off : p.Off+p.Filesz]})
	}

	// Build info: version, modules. Missing build info is fine if the
	// pclntab exists (the version then stays unknown).
	var biErr error
	_ = safely("read build info", func() error {
		bi, err := buildinfo.Read(bytes.NewReader(data))
		if err != nil {
			biErr = err
			return nil
		}
		b.GoVersion = bi.GoVersion
		b.MainModule = bi.Main.Path
		if bi.Main.Path != "" {
			b.modules = append(b.modules, bi.Main.Path)
		}
		for _, d := range bi.Deps {
			b.modules = append(b.modules, d.Path)
		}
		return nil
	})

	syms, _ := ef.Symbols() // error means no .symtab
	b.HasSymtab = ef.Section(".symtab") != nil && len(syms) > 0

	tabData, tabAddr, err := findPclntab(ef, data, syms)
	if err != nil {
		if biErr != nil {
			// err already wraps ErrNotGo, with what was looked for.
			return nil, fmt.Errorf("%w; build info: %v", err, biErr)
		}
		return nil, err
	}
	if binary.LittleEndian.Uint32(tabData) == magic12 {
		return nil, fmt.Errorf("%w: pclntab format of go1.2–go1.15 (%s)", ErrGoTooOld, orUnknown(b.GoVersion))
	}
	if b.GoVersion != "" {
		maj, min, ok := parseGoVersion(b.GoVersion)
		need := 17
		if b.Arch == "arm64" {
			need = 18
		}
		if ok && (maj < 1 || (maj == 1 && min < need)) {
			return nil, fmt.Errorf("%w: %s on %s", ErrGoTooOld, b.GoVersion, b.Arch)
		}
	}

	textStart, err := findTextStart(ef, data, syms, tabData, tabAddr)
	if err != nil {
		return nil, err
	}
	tab, err := parsePclntab(tabData, textStart)
	if err != nil {
		return nil, err
	}
	raws, err := tab.funcs()
	if err != nil {
		return nil, err
	}
	b.buildFuncs(raws)

	b.readItabs(syms)
	b.readTypeData(data, textStart)

	var dw *dwarf.Data
	if hasDWARFSections(ef) {
		if err := safely("read dwarf", func() (err error) {
			dw, err = ef.DWARF()
			return err
		}); err != nil {
			dw = nil // unusable DWARF: behave as if absent
		}
	}
	b.HasDWARF = dw != nil
	var info *dwarfInfo
	if dw != nil {
		if err := safely("walk dwarf", func() (err error) {
			info, err = readDWARF(dw, b.Arch)
			return err
		}); err != nil {
			info = nil
			b.HasDWARF = false
		}
	}
	if err := b.applyDWARF(info); err != nil {
		return nil, err
	}
	if info == nil {
		b.errorsFromTypes()
	}
	return b, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "version unknown"
	}
	return s
}

func hasDWARFSections(ef *elf.File) bool {
	for _, s := range ef.Sections {
		if s.Name == ".debug_info" || s.Name == ".zdebug_info" {
			return s.Type != elf.SHT_NOBITS
		}
	}
	return false
}

// buildFuncs turns pclntab records into Funcs and disassembles them.
func (b *Binary) buildFuncs(raws []rawFunc) {
	type pending struct {
		f    *Func
		flag uint8
	}
	ps := make([]pending, 0, len(raws))
	for _, r := range raws {
		f := &Func{Name: r.name, Entry: r.entry, End: r.end, InlinedSites: -1}
		if r.size != 0 && r.entry+r.size <= r.end {
			f.End = r.entry + r.size
		}
		f.Generated = isGenerated(r.name, r.file)
		ps = append(ps, pending{f, r.flag})
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].f.Entry < ps[j].f.Entry })
	b.Funcs = make([]*Func, len(ps))
	b.byName = make(map[string]*Func, len(ps))
	flags := make([]uint8, len(ps))
	for i, p := range ps {
		b.Funcs[i], flags[i] = p.f, p.flag
		if _, dup := b.byName[p.f.Name]; !dup {
			b.byName[p.f.Name] = p.f
		}
	}
	b.analyzeAll(flags)
}

// analyzeAll disassembles every function, in parallel chunks; each
// goroutine writes only its own Funcs.
func (b *Binary) analyzeAll(flags []uint8) {
	workers := runtime.GOMAXPROCS(0)
	if workers > 16 {
		workers = 16
	}
	n := len(b.Funcs)
	chunk := (n + workers - 1) / workers
	if chunk < 256 {
		chunk = 256
	}
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				b.analyze(b.Funcs[i], flags[i])
			}
		})
	}
	wg.Wait()
}

// analyze fills Rets, Probeable and Reason.
func (b *Binary) analyze(f *Func, flag uint8) {
	code, ok := b.text(f.Entry, f.End)
	if !ok || len(code) == 0 {
		f.Reason = fmt.Sprintf("code at %#x-%#x is not in an executable segment", f.Entry, f.End)
		return
	}
	rets, bad, err := scanRets(b.Arch, code)
	for _, r := range rets {
		f.Rets = append(f.Rets, f.Entry+uint64(r))
	}
	switch {
	case flag&funcFlagAsm != 0:
		f.Reason = "assembly function (ABI0, no goroutine register)"
	case err != nil:
		f.Rets = nil
		f.Reason = fmt.Sprintf("bytes at +%#x do not decode", bad)
	case len(f.Rets) == 0:
		if why := leavesByJump(b.Arch, code); why != "" {
			f.Reason = why
			return
		}
		f.Probeable, f.EntryOnly = true, true
	default:
		f.Probeable = true
	}
}

// IsGeneratedName reports, from its name alone, whether a function is
// runtime or compiler generated (a function body can also say so by its
// "<autogenerated>" file, which Func.Generated includes).
func IsGeneratedName(name string) bool { return isGenerated(name, "") }

// isGenerated reports runtime- and compiler-generated functions.
func isGenerated(name, file string) bool {
	if file == "<autogenerated>" {
		return true
	}
	for _, p := range []string{"runtime.", "runtime/internal/", "internal/", "type:", "type..", "go:", "go."} {
		if strings.HasPrefix(name, p) {
			// "go." also covers Go <1.20 names like go.buildid, but never
			// shapes: they appear inside brackets, not as a prefix.
			return true
		}
	}
	return strings.Contains(name, ".deferwrap") || strings.Contains(name, ".gowrap") || strings.HasSuffix(name, "-fm")
}

// readItabs maps go:itab.<concrete>,error symbols to their concrete type.
func (b *Binary) readItabs(syms []elf.Symbol) {
	for _, s := range syms {
		var rest string
		switch {
		case strings.HasPrefix(s.Name, "go:itab."):
			rest = s.Name[len("go:itab."):]
		case strings.HasPrefix(s.Name, "go.itab."):
			rest = s.Name[len("go.itab."):]
		default:
			continue
		}
		if c, ok := strings.CutSuffix(rest, ",error"); ok && c != "" {
			b.Itabs[s.Value] = c
		}
	}
}

// parseGoVersion extracts major and minor from "go1.22.12", "go1.21rc2",
// "devel go1.27-abcdef ...", "go1.23.0 X:boringcrypto".
func parseGoVersion(v string) (major, minor int, ok bool) {
	i := strings.Index(v, "go1.")
	if i < 0 {
		return 0, 0, false
	}
	s := v[i+2:]
	n, s, ok := leadingInt(s)
	if !ok || len(s) == 0 || s[0] != '.' {
		return 0, 0, false
	}
	m, _, ok := leadingInt(s[1:])
	if !ok {
		return 0, 0, false
	}
	return n, m, true
}

func leadingInt(s string) (int, string, bool) {
	n, i := 0, 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' && i < 6 {
		n = n*10 + int(s[i]-'0')
		i++
	}
	return n, s[i:], i > 0
}
