package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// attachHeld attaches for 2.5 s (two status ticks at least) to calltree
// held at its start, writing obs-agent's stderr to stderr.
func attachHeld(t *testing.T, stderr io.Writer) error {
	t.Helper()
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	prog := exec.Command(bin, "-wait")
	in, err := prog.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { in.Close(); prog.Process.Kill(); prog.Wait() }()
	return run(context.Background(), []string{"attach", "--pid", strconv.Itoa(prog.Process.Pid), "-f", "main.*",
		"--duration", "2500ms", "--db", filepath.Join(t.TempDir(), "obs.db")}, io.Discard, stderr)
}

// TestStatusLineOnlyOnTerminal: attach draws a live status line when its
// stderr is a terminal, and writes none into a pipe or file.
func TestStatusLineOnlyOnTerminal(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("not a terminal", func(t *testing.T) {
		var buf bytes.Buffer
		if err := attachHeld(t, &buf); err != nil {
			t.Fatal(err)
		}
		if s := buf.String(); strings.Contains(s, "calls/s") || strings.Contains(s, "\x1b[") || strings.Contains(s, "\r") {
			t.Errorf("status output without a terminal:\n%q", s)
		}
		if !strings.Contains(buf.String(), "duration elapsed") {
			t.Errorf("no exit line:\n%s", buf.String())
		}
	})
	t.Run("terminal", func(t *testing.T) {
		master, slave := testutil.OpenPTY(t)
		defer master.Close()
		var out bytes.Buffer
		done := make(chan struct{})
		go func() { io.Copy(&out, master); close(done) }() // ends with EIO once the slave is closed
		err := attachHeld(t, slave)
		slave.Close()
		<-done
		if err != nil {
			t.Fatal(err)
		}
		s := out.String()
		status := strings.Index(s, "obs-agent: 0 calls/s, recorded 0, lost 0, store ")
		end := strings.LastIndex(s, "duration elapsed")
		if status < 0 || end < status || !strings.Contains(s[status:end], "\r\x1b[K") {
			t.Errorf("want a status line, erased before the exit line; got %q", s)
		}
	})
}

// TestOverheadWarningOnce: a hot loop traced without --max-overhead warns
// once that the estimated cost passes 5% of a CPU; with the circuit
// breaker on it does not.
func TestOverheadWarningOnce(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	for _, breaker := range []bool{false, true} {
		args := []string{"run", "-f", "main.hot", "--db", filepath.Join(t.TempDir(), "obs.db")}
		if breaker {
			args = append(args, "--max-overhead", "0.9")
		}
		// A file, not a bytes.Buffer: the program's stderr is copied into
		// it by a concurrent ReadFrom, which would lose the log lines.
		stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
		if err != nil {
			t.Fatal(err)
		}
		// About 3 s of calls at the ~10 µs a traced call costs.
		err = run(context.Background(), append(args, "--", bin, "hot", "300000"), io.Discard, stderr)
		stderr.Close()
		if err != nil {
			t.Fatal(err)
		}
		out, _ := os.ReadFile(stderr.Name())
		n := strings.Count(string(out), "and --max-overhead is off")
		if want := map[bool]int{false: 1, true: 0}[breaker]; n != want {
			t.Errorf("breaker %v: %d warnings, want %d:\n%s", breaker, n, want, out)
		}
	}
}
