package symbols

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixtureDir holds the binaries built once per test-binary run.
var fixtureDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "symbols-fixtures-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

type buildResult struct {
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*buildResult{}
)

// buildFixture builds testdata/<src> once per (src, toolchain, flags) and
// returns the binary path. toolchain "" means the local one.
func buildFixture(t testing.TB, src, toolchain string, flags ...string) string {
	t.Helper()
	return buildFixtureEnv(t, src, toolchain, nil, flags...)
}

// buildFixtureEnv is buildFixture with extra environment (GOARCH,
// GOEXPERIMENT).
func buildFixtureEnv(t testing.TB, src, toolchain string, extraEnv []string, flags ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not in PATH: %v", err)
	}
	key := src + "|" + toolchain + "|" + strings.Join(flags, " ") + "|" + strings.Join(extraEnv, " ")
	buildsMu.Lock()
	defer buildsMu.Unlock() // serialize builds: toolchain downloads share the module cache
	if r, ok := builds[key]; ok {
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.path
	}
	out := filepath.Join(fixtureDir, fmt.Sprintf("bin%d", len(builds)))
	args := append([]string{"build", "-o", out}, flags...)
	args = append(args, ".")
	cmd := exec.Command(goBin, args...)
	cmd.Dir = filepath.Join("testdata", src)
	tc := "local"
	if toolchain != "" {
		tc = toolchain
	}
	env := []string{"GOWORK=off", "GOTOOLCHAIN=" + tc, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0"}
	if strings.HasPrefix(toolchain, "go1.16.") || strings.HasPrefix(toolchain, "go1.17.") {
		// -buildvcs appeared in go1.18; ignore a go env file that sets it.
		env = append(env, "GOFLAGS=", "GOENV=off")
	}
	cmd.Env = append(append(os.Environ(), env...), extraEnv...)
	r := &buildResult{path: out}
	if b, err := cmd.CombinedOutput(); err != nil {
		r.err = fmt.Errorf("build %s: %v\n%s", key, err, b)
	}
	builds[key] = r
	if r.err != nil {
		t.Fatal(r.err)
	}
	return out
}

func openT(t testing.TB, path string) *Binary {
	t.Helper()
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

var variants = []struct {
	name  string
	flags []string
}{
	{"normal", nil},
	{"stripped", []string{"-ldflags=-s -w"}},
	{"pie", []string{"-buildmode=pie"}},
	{"pie-stripped", []string{"-buildmode=pie", "-ldflags=-s -w"}},
}

func TestFixtureFunctions(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			path := buildFixture(t, "fixture", "", v.flags...)
			b := openT(t, path)
			stripped := strings.Contains(v.name, "stripped")
			if b.Arch != "amd64" && b.Arch != "arm64" {
				t.Errorf("Arch = %q", b.Arch)
			}
			if b.MainModule != "example.com/fixture" {
				t.Errorf("MainModule = %q", b.MainModule)
			}
			if !strings.HasPrefix(b.GoVersion, "go1.") {
				t.Errorf("GoVersion = %q", b.GoVersion)
			}
			if b.PIE != strings.HasPrefix(v.name, "pie") {
				t.Errorf("PIE = %v", b.PIE)
			}
			if b.HasSymtab == stripped || b.HasDWARF == stripped {
				t.Errorf("HasSymtab=%v HasDWARF=%v for %s", b.HasSymtab, b.HasDWARF, v.name)
			}
			wantSrc := "dwarf"
			if stripped {
				wantSrc = "table"
			}
			if b.LayoutSource != wantSrc || b.Layout.Goid == 0 {
				t.Errorf("layout %+v from %q, want source %q", b.Layout, b.LayoutSource, wantSrc)
			}
			for i := 1; i < len(b.Funcs); i++ {
				if b.Funcs[i].Entry < b.Funcs[i-1].Entry {
					t.Fatalf("Funcs not sorted at %d", i)
				}
			}
			for name, gen := range map[string]bool{
				"main.(*Counter).Inc":        false,
				"main.Counter.Value":         false,
				"main.Map[go.shape.int]":     false,
				"main.main.func1":            false,
				"main.main":                  false,
				"main.Classify":              false,
				"main.(*Counter).Inc-fm":     true,
				"main.main.deferwrap1":       true,
				"runtime.newproc1":           true,
				"runtime.gopanic":            true,
				"main.GenMany[go.shape.int]": false,
			} {
				f := b.Lookup(name)
				if f == nil {
					t.Errorf("Lookup(%q) = nil", name)
					continue
				}
				if f.Generated != gen {
					t.Errorf("%s: Generated = %v, want %v", name, f.Generated, gen)
				}
				if f.End <= f.Entry {
					t.Errorf("%s: End %#x <= Entry %#x", name, f.End, f.Entry)
				}
			}
			if f := b.Lookup("main.Classify"); f != nil && (!f.Probeable || len(f.Rets) < 2) {
				t.Errorf("Classify: probeable=%v rets=%d, want several RETs", f.Probeable, len(f.Rets))
			}
			// Fail only panics: no RET, traced by its entry alone.
			if f := b.Lookup("main.Fail"); f != nil && (!f.Probeable || !f.EntryOnly || len(f.Rets) != 0) {
				t.Errorf("Fail: probeable=%v entry-only=%v rets=%d reason %q, want entry-only", f.Probeable, f.EntryOnly, len(f.Rets), f.Reason)
			}
			// Assembly functions are refused (Go 1.19+ sets the flag).
			if f := b.Lookup("runtime.memmove"); f == nil || f.Probeable || !strings.Contains(f.Reason, "assembly") {
				t.Errorf("runtime.memmove: %+v, want assembly refusal", f)
			}
			if b.Lookup("main.small") != nil {
				t.Errorf("main.small should only exist inlined")
			}
			// Error itabs are named from .itablink when there is no
			// symbol table.
			found := false
			for _, c := range b.Itabs {
				found = found || c == "*errors.errorString"
			}
			if !found {
				t.Errorf("Itabs lack *errors.errorString: %v", b.Itabs)
			}
			if stripped {
				if b.InlinedOnly() != nil {
					t.Errorf("stripped: InlinedOnly=%d, want none", len(b.InlinedOnly()))
				}
				if f := b.Lookup("main.Classify"); f.InlinedSites != -1 || f.ErrResult != nil {
					t.Errorf("stripped: InlinedSites=%d ErrResult=%v", f.InlinedSites, f.ErrResult)
				}
			} else {
				if !contains(b.InlinedOnly(), "main.small") {
					t.Errorf("InlinedOnly lacks main.small")
				}
			}
			checkFileOffsets(t, path, b)
		})
	}
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// checkFileOffsets verifies that the file bytes at FileOffset(Entry) equal
// the .text section bytes at Entry, for every function.
func checkFileOffsets(t *testing.T, path string, b *Binary) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	text := ef.Section(".text")
	data, err := text.Data()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range b.Funcs {
		if f.Entry < text.Addr || f.End > text.Addr+text.Size {
			continue
		}
		off, err := b.FileOffset(f.Entry)
		if err != nil {
			t.Fatalf("FileOffset(%s): %v", f.Name, err)
		}
		want := data[f.Entry-text.Addr : f.End-text.Addr]
		if int(off)+len(want) > len(raw) || !bytes.Equal(raw[off:int(off)+len(want)], want) {
			t.Fatalf("%s: bytes at file offset %#x differ from .text at %#x", f.Name, off, f.Entry)
		}
		n++
	}
	if n < len(b.Funcs)/2 {
		t.Errorf("only %d of %d functions checked inside .text", n, len(b.Funcs))
	}
	if _, err := b.FileOffset(0); err == nil {
		t.Errorf("FileOffset(0) succeeded")
	}
}

func TestStrippedMatchesUnstripped(t *testing.T) {
	for _, pair := range [][2]int{{0, 1}, {2, 3}} {
		full := openT(t, buildFixture(t, "fixture", "", variants[pair[0]].flags...))
		strip := openT(t, buildFixture(t, "fixture", "", variants[pair[1]].flags...))
		if len(full.Funcs) != len(strip.Funcs) {
			t.Fatalf("%s has %d funcs, %s has %d", variants[pair[0]].name, len(full.Funcs), variants[pair[1]].name, len(strip.Funcs))
		}
		for i, f := range full.Funcs {
			g := strip.Funcs[i]
			if f.Name != g.Name || f.Entry != g.Entry || f.End != g.End || !reflect.DeepEqual(f.Rets, g.Rets) ||
				f.Probeable != g.Probeable || f.Generated != g.Generated {
				t.Fatalf("func %d differs:\n%+v\n%+v", i, f, g)
			}
		}
		if full.Layout != strip.Layout {
			t.Errorf("layout: dwarf %+v != table %+v", full.Layout, strip.Layout)
		}
	}
}

// TestSymtabAgrees checks Entry and End against .symtab FUNC symbols (the
// linker's own sizes), independently of the pclntab.
func TestSymtabAgrees(t *testing.T) {
	path := buildFixture(t, "fixture", "")
	b := openT(t, path)
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	syms, err := ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || !strings.HasPrefix(s.Name, "main.") || s.Size == 0 {
			continue
		}
		f := b.Lookup(s.Name)
		if f == nil {
			t.Errorf("%s in .symtab but not in Funcs", s.Name)
			continue
		}
		if f.Entry != s.Value || f.End != s.Value+s.Size {
			t.Errorf("%s: [%#x,%#x), symtab [%#x,%#x)", s.Name, f.Entry, f.End, s.Value, s.Value+s.Size)
		}
		checked++
	}
	if checked < 10 {
		t.Errorf("only %d main.* symbols checked", checked)
	}
}

var (
	objdumpText = regexp.MustCompile(`^TEXT (\S+)\(SB\)`)
	objdumpInst = regexp.MustCompile(`^\s+\S+:\d+\s+0x([0-9a-f]+)\s+[0-9a-f]+\s+(\S+)`)
)

// objdumpRets runs `go tool objdump` (an independent disassembler) and
// returns RET addresses per function for functions matching re.
func objdumpRets(t *testing.T, path, re string) map[string][]uint64 {
	t.Helper()
	out, err := exec.Command("go", "tool", "objdump", "-s", re, path).Output()
	if err != nil {
		t.Skipf("go tool objdump: %v", err)
	}
	res := map[string][]uint64{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := objdumpText.FindStringSubmatch(line); m != nil {
			cur = m[1]
			res[cur] = []uint64{}
			continue
		}
		if m := objdumpInst.FindStringSubmatch(line); m != nil && cur != "" && m[2] == "RET" {
			a, _ := strconv.ParseUint(m[1], 16, 64)
			res[cur] = append(res[cur], a)
		}
	}
	return res
}

func TestRetsMatchObjdump(t *testing.T) {
	for _, v := range variants[:3] {
		t.Run(v.name, func(t *testing.T) {
			path := buildFixture(t, "fixture", "", v.flags...)
			b := openT(t, path)
			oracle := objdumpRets(t, path, `^(main|fmt|strconv|errors)\.`)
			if len(oracle) < 20 {
				t.Fatalf("objdump oracle found only %d functions", len(oracle))
			}
			if n := len(oracle["main.Classify"]); n < 2 {
				t.Errorf("oracle: main.Classify has %d RETs, fixture expects several", n)
			}
			for name, want := range oracle {
				f := b.Lookup(name)
				if f == nil {
					if !b.HasSymtab {
						continue // objdump names from .symtab only
					}
					t.Errorf("%s: not found", name)
					continue
				}
				if f.Rets == nil {
					f.Rets = []uint64{}
				}
				if !reflect.DeepEqual(f.Rets, want) {
					t.Errorf("%s: Rets %x, objdump %x", name, f.Rets, want)
				}
			}
		})
	}
}

// errCase is the hand-derived location of an error result on amd64. Rules
// (abi-internal.md): results use integer registers RAX(0) RBX(1) RCX(2)
// RDI(3) RSI(4) R8(5) R9(6) R10(7) R11(8) from 0, independently of the
// arguments; a result that does not fit entirely goes to the stack and
// releases its registers. The stack results area starts after the
// stack-assigned arguments rounded up to 8; at RET, SP points at the return
// address, so the area starts at SP+8.
type errCase struct {
	fn    string
	want  *ErrorResult
	deriv string
}

var amd64ErrCases = []errCase{
	{"main.ErrOnly", &ErrorResult{InRegs: true, ItabReg: 0, DataReg: 1, Index: 0}, "error -> RAX,RBX"},
	{"main.IntErr", &ErrorResult{InRegs: true, ItabReg: 1, DataReg: 2, Index: 1}, "int RAX; error RBX,RCX"},
	{"main.StrErr", &ErrorResult{InRegs: true, ItabReg: 2, DataReg: 3, Index: 1}, "string RAX,RBX; error RCX,RDI"},
	{"main.FloatErr", &ErrorResult{InRegs: true, ItabReg: 0, DataReg: 1, Index: 1}, "float64 X0; error RAX,RBX"},
	{"main.Struct3Err", &ErrorResult{InRegs: true, ItabReg: 3, DataReg: 4, Index: 1}, "S3 RAX,RBX,RCX; error RDI,RSI"},
	// S9 has 9 int64 fields: it fits exactly in the 9 integer registers
	// (I=9); the error needs I=11 > 9, so the error (not the struct) goes
	// to the stack, first stack result, no stack args: SP+8.
	{"main.Struct9Err", &ErrorResult{InRegs: false, StackOff: 8, Index: 1}, "S9 RAX..R11; error stack+0 -> SP+8"},
	// 8 ints use RAX..R10 (I=8); error needs I=10 > 9 -> stack, SP+8.
	{"main.Ints8Err", &ErrorResult{InRegs: false, StackOff: 8, Index: 8}, "8 ints RAX..R10; error stack -> SP+8"},
	// 9 ints fill all 9; the 10th result (error) goes to the stack.
	{"main.Ints9Err", &ErrorResult{InRegs: false, StackOff: 8, Index: 9}, "9 ints RAX..R11; error stack -> SP+8"},
	// Args: a S9 takes all 9 registers; b int32 goes to stack [0,4);
	// args area rounds to 8. Results: S9 in registers, error on the stack
	// at results offset 0 = args+8 -> SP+8+8 = SP+16.
	{"main.StackArgsStructErr", &ErrorResult{InRegs: false, StackOff: 16, Index: 1}, "b on stack; error at SP+16"},
	{"main.ErrFirst", &ErrorResult{InRegs: true, ItabReg: 0, DataReg: 1, Index: 0}, "error RAX,RBX; int RCX"},
	// Shape instantiation: the dictionary takes RAX, a..h take RBX..R11,
	// i goes to the stack [0,8). Results: S9 in registers, error at SP+16.
	{"main.GenMany[go.shape.int]", &ErrorResult{InRegs: false, StackOff: 16, Index: 1}, "dict+8 args in regs, i on stack; error SP+16"},
	{"main.NoErr", nil, "no error result"},
	{"main.Classify", nil, "no error result"},
}

func checkErrCases(t *testing.T, b *Binary, cases []errCase) {
	t.Helper()
	for _, c := range cases {
		f := b.Lookup(c.fn)
		if f == nil {
			t.Errorf("%s: not found", c.fn)
			continue
		}
		if !reflect.DeepEqual(f.ErrResult, c.want) {
			t.Errorf("%s (%s): ErrResult = %+v, want %+v", c.fn, c.deriv, f.ErrResult, c.want)
		}
	}
}

func TestErrorResults(t *testing.T) {
	b := openT(t, buildFixture(t, "fixture", ""))
	if b.Arch != "amd64" {
		t.Skipf("hand-derived cases are for amd64, host binary is %s", b.Arch)
	}
	checkErrCases(t, b, amd64ErrCases)
	pie := openT(t, buildFixture(t, "fixture", "", "-buildmode=pie"))
	checkErrCases(t, pie, amd64ErrCases)
}

func TestNotGo(t *testing.T) {
	for _, p := range []string{"/bin/ls", "/bin/sh", "/usr/bin/env"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		_, err := Open(p)
		if !errors.Is(err, ErrNotGo) {
			t.Errorf("Open(%s) = %v, want ErrNotGo", p, err)
		}
		return
	}
	t.Skip("no non-Go system binary found")
}

func TestNotELF(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "text")
	if err := os.WriteFile(p, []byte("hello, this is not a binary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); !errors.Is(err, ErrNotELF) {
		t.Errorf("Open(text) = %v, want ErrNotELF", err)
	}
	if _, err := Open(filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrNotELF) {
		t.Errorf("Open(missing) = %v, want a not-exist error", err)
	}
}

func TestTruncated(t *testing.T) {
	raw, err := os.ReadFile(buildFixture(t, "fixture", ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{4, 64, 1000, 4096, len(raw) / 3, len(raw) / 2, len(raw) - 1} {
		if _, err := openBytes("trunc", raw[:n]); err == nil {
			t.Errorf("truncated to %d bytes: no error", n)
		}
	}
}

func TestModuleOf(t *testing.T) {
	b := openT(t, buildFixture(t, "fixture", ""))
	for pkg, want := range map[string]string{
		"example.com/fixture":     "example.com/fixture",
		"example.com/fixture/sub": "example.com/fixture",
		"example.com/fixtureX":    "",
		"main":                    "example.com/fixture",
		"fmt":                     "std",
		"internal/poll":           "std",
		"vendor/golang.org/x/net": "std",
		"type:":                   "",
	} {
		if got := b.ModuleOf(pkg); got != want {
			t.Errorf("ModuleOf(%q) = %q, want %q", pkg, got, want)
		}
	}
	b2 := &Binary{modules: []string{"github.com/a/b", "github.com/a/b/v2", "github.com/a/bc"}}
	for pkg, want := range map[string]string{
		"main":                "",
		"fmt":                 "",
		"github.com/a/b/x":    "github.com/a/b",
		"github.com/a/b/v2/y": "github.com/a/b/v2",
		"github.com/a/bc":     "github.com/a/bc",
		"github.com/a":        "",
	} {
		if got := b2.ModuleOf(pkg); got != want {
			t.Errorf("ModuleOf(%q) = %q, want %q", pkg, got, want)
		}
	}
}

func TestParseGoVersion(t *testing.T) {
	for v, want := range map[string][2]int{
		"go1.22.12":                  {1, 22},
		"go1.21rc2":                  {1, 21},
		"go1.26.8 X:boringcrypto":    {1, 26},
		"devel go1.27-abcdef Mon 1 ": {1, 27},
	} {
		maj, min, ok := parseGoVersion(v)
		if !ok || maj != want[0] || min != want[1] {
			t.Errorf("parseGoVersion(%q) = %d,%d,%v", v, maj, min, ok)
		}
	}
	if _, _, ok := parseGoVersion("garbage"); ok {
		t.Error("parseGoVersion(garbage) ok")
	}
}

func TestScanRets(t *testing.T) {
	for _, c := range []struct {
		arch string
		code []byte
		rets []int
		bad  int // -1: decodes
	}{
		{"amd64", []byte{0x48, 0xff, 0x00, 0xc3}, []int{3}, -1},                         // INCQ (AX); RET
		{"amd64", []byte{0xc3, 0xcc, 0xcc, 0xcc}, []int{0}, -1},                         // RET + INT3 padding
		{"amd64", []byte{0xc2, 0x08, 0x00, 0x90, 0xc3}, []int{0, 4}, -1},                // RET $8; NOP; RET
		{"amd64", []byte{0xb8, 0xc3, 0x00, 0x00, 0x00, 0xc3}, []int{5}, -1},             // MOVL $0xc3, AX: the C3 inside is not a RET
		{"amd64", []byte{0x90, 0x06, 0xc3}, nil, 1},                                     // PUSH ES is invalid in 64-bit mode
		{"amd64", []byte{0x90, 0x48}, nil, 1},                                           // dangling REX prefix
		{"amd64", []byte{0x90, 0x0f}, nil, 1},                                           // truncated two-byte opcode
		{"amd64", []byte{0xcc, 0x90, 0xc3}, []int{2}, -1},                               // INT3 in the middle is an instruction
		{"arm64", []byte{0xc0, 0x03, 0x5f, 0xd6, 0, 0, 0, 0}, []int{0}, -1},             // RET; zero padding
		{"arm64", []byte{0x1f, 0x20, 0x03, 0xd5, 0xc0, 0x03, 0x5f, 0xd6}, []int{4}, -1}, // NOP; RET
		{"arm64", []byte{0xc0, 0x03, 0x5f}, nil, 0},                                     // truncated
		// LSE atomics arm64asm cannot decode, as the Go compiler inlines
		// them (Mutex.Lock, atomic.Add): CASALW W27, W3, (R2); LDADDAL
		// X2, X3, (R1); CASAL X27, X5, (R3); then RET.
		{"arm64", []byte{0x43, 0xfc, 0xfb, 0x88, 0x23, 0x00, 0xe2, 0xf8, 0x65, 0xfc, 0xfb, 0xc8, 0xc0, 0x03, 0x5f, 0xd6}, []int{12}, -1},
		{"arm64", []byte{0x1f, 0x20, 0x03, 0xd5, 0x18, 0x00, 0x00, 0x02, 0xc0, 0x03, 0x5f, 0xd6}, nil, 4}, // NOP; a word that is no instruction
	} {
		rets, bad, err := scanRets(c.arch, c.code)
		if c.bad >= 0 {
			if err == nil || bad != c.bad {
				t.Errorf("%s % x: bad=%d err=%v, want failure at %d", c.arch, c.code, bad, err, c.bad)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(rets, c.rets) {
			t.Errorf("%s % x: rets=%v err=%v, want %v", c.arch, c.code, rets, err, c.rets)
		}
	}
	if _, _, err := scanRets("riscv64", []byte{0}); !errors.Is(err, ErrUnsupportedArch) {
		t.Errorf("riscv64: %v", err)
	}
}

// TestLayoutTable builds the fixture with the toolchain of every row of the
// layout table, reads the layout from the build's DWARF and asserts that
// the row agrees, so a row added for a new release is proved by CI. For
// releases that default to DWARF 5 (1.25+) it also builds with DWARF 4, as
// some distributions do, and checks that both parse alike. It re-checks
// stripped builds (layout from the table) and the ABI error locations.
func TestLayoutTable(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: downloads and runs several Go toolchains (GOTOOLCHAIN=go1.X.Y)")
	}
	for _, r := range layoutTable() {
		t.Run(r.verifiedBy, func(t *testing.T) {
			fixture := "fixture"
			if r.minor < 21 {
				fixture = "oldfixture"
			}
			path := buildFixture(t, fixture, r.verifiedBy)
			full := openT(t, path)
			wantDWARF := 4
			if r.minor >= 25 {
				wantDWARF = 5
			}
			checkLayoutFromDWARF(t, path, full, r.Layout, wantDWARF)
			t.Logf("%s: %+v (DWARF %d)", full.GoVersion, full.Layout, wantDWARF)
			if r.minor >= 25 {
				p4 := buildFixtureEnv(t, fixture, r.verifiedBy, []string{"GOEXPERIMENT=nodwarf5"})
				d4 := openT(t, p4)
				checkLayoutFromDWARF(t, p4, d4, r.Layout, 4)
				sameAnalysis(t, full, d4)
			}
			strip := openT(t, buildFixture(t, fixture, r.verifiedBy, "-ldflags=-s -w"))
			if strip.LayoutSource != "table" || strip.Layout != r.Layout {
				t.Errorf("stripped: layout %+v from %s, want %+v from the table", strip.Layout, strip.LayoutSource, r.Layout)
			}
			if len(strip.Funcs) != len(full.Funcs) {
				t.Errorf("stripped has %d funcs, full %d", len(strip.Funcs), len(full.Funcs))
			}
			f := full.Lookup("main.IntErr")
			if f == nil || !f.Probeable || len(f.Rets) == 0 {
				t.Fatalf("main.IntErr: %+v", f)
			}
			want := &ErrorResult{InRegs: true, ItabReg: 1, DataReg: 2, Index: 1}
			// Go 1.17 DWARF omits unnamed results, so ErrResult stays nil
			// there (unknown, never guessed).
			if r.minor == 17 {
				want = nil
			}
			if full.Arch == "amd64" && !reflect.DeepEqual(f.ErrResult, want) {
				t.Errorf("IntErr ErrResult = %+v, want %+v", f.ErrResult, want)
			}
			if fixture == "fixture" && full.Arch == "amd64" {
				checkErrCases(t, full, amd64ErrCases)
			}
		})
	}
	// The local toolchain must be in the table too, and arm64 must share
	// the layout (the BPF programs read the same offsets there).
	for _, arch := range []string{runtime.GOARCH, "arm64"} {
		t.Run("local-"+arch, func(t *testing.T) {
			path := buildFixtureEnv(t, "fixture", "", []string{"GOARCH=" + arch})
			b := openT(t, path)
			want, err := layoutFor(b.GoVersion)
			if err != nil {
				t.Fatalf("the local toolchain: %v", err)
			}
			_, minor, _ := parseGoVersion(b.GoVersion)
			checkLayoutFromDWARF(t, path, b, want, map[bool]int{true: 5, false: 4}[minor >= 25])
		})
	}
}

// checkLayoutFromDWARF asserts that b's layout was read from its DWARF, of
// the given version, and equals want.
func checkLayoutFromDWARF(t *testing.T, path string, b *Binary, want Layout, dwarfVersion int) {
	t.Helper()
	if v := dwarfVersionOf(t, path); v != dwarfVersion {
		t.Errorf("%s: DWARF version %d, want %d", path, v, dwarfVersion)
	}
	if b.LayoutSource != "dwarf" {
		t.Fatalf("LayoutSource = %q, want dwarf", b.LayoutSource)
	}
	if b.Layout != want {
		t.Errorf("%s %s: DWARF says %+v, the table says %+v", b.GoVersion, b.Arch, b.Layout, want)
	}
}

// dwarfVersionOf reads the version of the first unit of .debug_info.
func dwarfVersionOf(t *testing.T, path string) int {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	var data []byte
	if s := ef.Section(".debug_info"); s != nil {
		data, err = s.Data() // decompresses SHF_COMPRESSED sections
	} else if s := ef.Section(".zdebug_info"); s != nil {
		// Before Go 1.19 (?): "ZLIB", the size as 8 big-endian bytes, zlib data.
		data, err = s.Data()
		if err == nil && len(data) > 12 && string(data[:4]) == "ZLIB" {
			var zr io.ReadCloser
			if zr, err = zlib.NewReader(bytes.NewReader(data[12:])); err == nil {
				data, err = io.ReadAll(zr)
			}
		}
	} else {
		t.Fatalf("%s: no .debug_info", path)
	}
	if err != nil || len(data) < 6 {
		t.Fatalf("%s: .debug_info: %v (%d bytes)", path, err, len(data))
	}
	return int(binary.LittleEndian.Uint16(data[4:6]))
}

// sameAnalysis asserts two builds of one program were analysed alike.
func sameAnalysis(t *testing.T, a, b *Binary) {
	t.Helper()
	if len(a.Funcs) != len(b.Funcs) {
		t.Fatalf("%d funcs vs %d", len(a.Funcs), len(b.Funcs))
	}
	for i, f := range a.Funcs {
		g := b.Funcs[i]
		if f.Name != g.Name || f.Probeable != g.Probeable || len(f.Rets) != len(g.Rets) ||
			f.InlinedSites != g.InlinedSites || !reflect.DeepEqual(f.ErrResult, g.ErrResult) {
			t.Errorf("%s differs between DWARF 5 and 4:\n%+v\n%+v", f.Name, f, g)
		}
	}
}

// TestLayoutRows checks the table's shape: one row per minor release, in
// order, without gaps, each verified by a toolchain of its own release.
func TestLayoutRows(t *testing.T) {
	tab := layoutTable()
	for i, r := range tab {
		maj, minor, ok := parseGoVersion(r.verifiedBy)
		if !ok || maj != 1 || minor != r.minor {
			t.Errorf("row go1.%d is verified by %q", r.minor, r.verifiedBy)
		}
		if i > 0 && r.minor != tab[i-1].minor+1 {
			t.Errorf("row go1.%d follows go1.%d", r.minor, tab[i-1].minor)
		}
		if err := r.checkFixed(); err != nil {
			t.Errorf("row go1.%d: %v", r.minor, err)
		}
	}
	last := tab[len(tab)-1].minor
	for v, wantErr := range map[string]bool{
		"go1.17.13": false, fmt.Sprintf("go1.%d.4", last): false, fmt.Sprintf("go1.%d.0", last+1): true,
		"go1.16.15": true, "go2.0": true, "": true,
	} {
		_, err := layoutFor(v)
		if (err != nil) != wantErr {
			t.Errorf("layoutFor(%q): %v", v, err)
		}
		if err != nil && v != "" && !strings.Contains(err.Error(), "not in the verified table") && !strings.Contains(err.Error(), "unknown") {
			t.Errorf("layoutFor(%q): unclear error %v", v, err)
		}
	}
}

func TestGoTooOld(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: downloads the go1.16 toolchain")
	}
	_, err := Open(buildFixture(t, "oldfixture", "go1.16.15"))
	if !errors.Is(err, ErrGoTooOld) {
		t.Errorf("go1.16 binary: %v, want ErrGoTooOld", err)
	}
}

func goToolBinary(t testing.TB) string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("go env GOROOT: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s: %v", p, err)
	}
	return p
}

// TestOpenGoTool opens the largest binary at hand, the go command. How long
// that takes is BenchmarkOpenGoTool's to measure: a fixed limit here would
// fail on a loaded machine, not on slow code.
func TestOpenGoTool(t *testing.T) {
	p := goToolBinary(t)
	start := time.Now()
	b := openT(t, p)
	d := time.Since(start)
	t.Logf("Open(%s): %d funcs, DWARF=%v, %v", p, len(b.Funcs), b.HasDWARF, d)
	if b.Lookup("main.main") == nil || b.Lookup("runtime.newproc1") == nil {
		t.Errorf("main.main / runtime.newproc1 missing")
	}
}

func BenchmarkOpenGoTool(b *testing.B) {
	p := goToolBinary(b)
	for b.Loop() {
		bin, err := Open(p)
		if err != nil {
			b.Fatal(err)
		}
		bin.Close()
	}
}

func FuzzOpen(f *testing.F) {
	raw, err := os.ReadFile(buildFixture(f, "oldfixture", ""))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw[:4096])
	f.Add(raw[:64])
	f.Add([]byte("\x7fELF"))
	f.Add([]byte("not an elf"))
	// The pclntab region with an ELF header in front exercises the scanner.
	if ef, err := elf.NewFile(bytes.NewReader(raw)); err == nil {
		if s := ef.Section(".gopclntab"); s != nil {
			end := min(s.Offset+8192, uint64(len(raw)))
			seed := append(append([]byte{}, raw[:4096]...), raw[s.Offset:end]...)
			f.Add(seed)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		b, err := openBytes("fuzz", data)
		if err == nil && b == nil {
			t.Fatal("nil Binary without error")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Open took %v on %d bytes", d, len(data))
		}
	})
}

func FuzzScanRets(f *testing.F) {
	f.Add([]byte{0x48, 0xff, 0x00, 0xc3}, false)
	f.Add([]byte{0xc0, 0x03, 0x5f, 0xd6}, true)
	f.Fuzz(func(t *testing.T, code []byte, arm bool) {
		arch := "amd64"
		if arm {
			arch = "arm64"
		}
		rets, bad, err := scanRets(arch, code)
		prev := -1
		for _, r := range rets {
			if r <= prev || r >= len(code) {
				t.Fatalf("bad RET offset %d (len %d)", r, len(code))
			}
			prev = r
		}
		if err != nil && (bad < 0 || bad >= len(code)) {
			t.Fatalf("bad offset %d for len %d", bad, len(code))
		}
	})
}

// TestARM64CompiledCodeDecodes builds testdata/calltree for arm64 and
// requires every Go-compiled function to decode: the compiler inlines LSE
// atomics (sync.Mutex.Lock, runtime.newproc1), which arm64asm cannot
// decode, and refusing them refused main.burst.func1 and the runtime hook
// that links goroutines to their parents on a real arm64 kernel.
func TestARM64CompiledCodeDecodes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a program")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not in PATH: %v", err)
	}
	out := filepath.Join(t.TempDir(), "calltree-arm64")
	cmd := exec.Command(goBin, "build", "-o", out, ".")
	cmd.Dir = filepath.Join("..", "..", "testdata", "calltree")
	cmd.Env = append(os.Environ(), "GOARCH=arm64", "CGO_ENABLED=0", "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	b := openT(t, out)
	if b.Arch != "arm64" {
		t.Fatalf("arch %s", b.Arch)
	}
	for _, f := range b.Funcs {
		// go:text* are section markers, not functions.
		if strings.Contains(f.Reason, "do not decode") && !strings.HasPrefix(f.Name, "go:") {
			t.Errorf("%s: %s", f.Name, f.Reason)
		}
	}
	for _, name := range []string{"runtime.newproc1", "main.burst.func1", "sync.(*WaitGroup).Add"} {
		if f := b.Lookup(name); f == nil || !f.Probeable {
			t.Errorf("%s not probeable: %+v", name, f)
		}
	}
}
