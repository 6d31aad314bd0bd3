// Package testutil owns what the privileged end-to-end tests share:
// skipping without root, building the target programs in testdata/ with a
// chosen Go toolchain and build mode, once per test binary (or taking them
// prebuilt, in a guest kernel), the matrix of Go releases they run against,
// pseudo-terminals, and a buffer that concurrent log writers can share with
// the test reading it.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/symbols"
)

// RequireRoot skips the test, with the reason, when not running as root or
// when -short asks for unit tests only.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that attaches real uprobes")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches real uprobes with BPF (run the tests with sudo, as CI does)")
	}
}

// Build describes one build of a testdata program.
type Build struct {
	Program   string // directory under testdata/, e.g. "calltree"
	Toolchain string // GOTOOLCHAIN value, e.g. "go1.22.12"; "" = the local go
	Stripped  bool   // -ldflags=-s -w
	PIE       bool   // -buildmode=pie
	// DWARF4 builds with GOEXPERIMENT=nodwarf5: DWARF 4 from a release
	// that defaults to DWARF 5 (Go 1.25+), as some distributions do.
	DWARF4 bool
}

func (b Build) String() string {
	s := b.Program
	if b.Toolchain != "" {
		s += "-" + b.Toolchain
	}
	if b.Stripped {
		s += "-stripped"
	}
	if b.PIE {
		s += "-pie"
	}
	if b.DWARF4 {
		s += "-dwarf4"
	}
	return s
}

// Matrix is every build of program that the cross-release tests run: each
// Go release of the verified runtime layout table from go1.21 on, plain,
// stripped and PIE, and the newest one with DWARF 4 as well. A release
// added to the table (internal/symbols) joins the matrix by itself.
//
// Under the race detector the matrix is the newest release only (plain,
// stripped, PIE): -race checks the agent's own Go code, which runs the
// same for every target build, and the full matrix runs without -race in
// the same `make test`. The whole matrix under -race cost CI about 25 min
// of a 30 min budget on a loaded machine.
func Matrix(program string) []Build {
	var out []Build
	tcs := symbols.VerifiedToolchains()
	if raceEnabled {
		tcs = tcs[len(tcs)-1:]
	}
	for _, tc := range tcs {
		if !atLeast(tc, 21) {
			continue
		}
		out = append(out,
			Build{Program: program, Toolchain: tc},
			Build{Program: program, Toolchain: tc, Stripped: true},
			Build{Program: program, Toolchain: tc, PIE: true})
	}
	if raceEnabled {
		return out
	}
	return append(out, Build{Program: program, Toolchain: tcs[len(tcs)-1], DWARF4: true})
}

var (
	mu     sync.Mutex
	built  = map[Build]string{}
	outDir string
)

// RepoRoot finds the repository root from the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "testdata")); err == nil {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root not found")
		}
		dir = parent
	}
}

// PrebuiltEnv names the environment variable that points BuildProgram at a
// directory of programs built beforehand, each named by Build.String(). A
// guest kernel booted by scripts/test-kernel.sh has no Go toolchain (and
// compiling under emulation would take far longer than the tests), so the
// script builds the programs on the host for the guest's architecture.
const PrebuiltEnv = "OBS_AGENT_PREBUILT"

// BuildProgram builds b (once per test binary) and returns the path. When
// $OBS_AGENT_PREBUILT is set it returns the prebuilt program from there
// instead, and fails the test if that build was not prepared.
func BuildProgram(t testing.TB, b Build) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[b]; ok {
		return p
	}
	if dir := os.Getenv(PrebuiltEnv); dir != "" {
		p := filepath.Join(dir, b.String())
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s, but %s was not prebuilt there (add it to the script's list): %v", PrebuiltEnv, dir, b, err)
		}
		built[b] = p
		return p
	}
	if outDir == "" {
		d, err := os.MkdirTemp("", "obs-agent-targets-")
		if err != nil {
			t.Fatal(err)
		}
		outDir = d
	}
	src := filepath.Join(RepoRoot(t), "testdata", b.Program)
	out := filepath.Join(outDir, b.String())
	args := []string{"build", "-o", out}
	if b.Stripped {
		args = append(args, "-ldflags=-s -w")
	}
	if b.PIE {
		args = append(args, "-buildmode=pie")
	}
	args = append(args, ".")
	cmd := exec.Command("go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if b.DWARF4 {
		cmd.Env = append(cmd.Env, "GOEXPERIMENT=nodwarf5")
	}
	if b.Toolchain != "" {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+b.Toolchain)
	} else {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN=local")
	}
	if outp, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", b, err, outp)
	}
	built[b] = out
	return out
}

// GoVersion reports the version string of a toolchain ("" = local).
func GoVersion(toolchain string) string {
	if toolchain == "" {
		return runtime.Version()
	}
	return toolchain
}

// HasGowrap reports whether a toolchain wraps `go f(args)` in a
// compiler-generated gowrap closure (Go 1.22+).
func HasGowrap(toolchain string) bool {
	return atLeast(GoVersion(toolchain), 22)
}

// atLeast reports whether a version string ("go1.22.12") is go1.minor or
// later.
func atLeast(version string, minor int) bool {
	var maj, min int
	fmt.Sscanf(strings.TrimPrefix(version, "go"), "%d.%d", &maj, &min)
	return maj > 1 || min >= minor
}

// OpenPTY opens a pseudo-terminal pair, for tests of what is drawn only on
// a terminal; it skips the test when the system has no pseudo-terminals.
func OpenPTY(t testing.TB) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m, s
}

// SyncBuffer is a bytes.Buffer that several goroutines may write (a slog
// handler's target, typically) while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
