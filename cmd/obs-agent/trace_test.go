package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(context.Background(), args, &o, &e)
	return o.String(), e.String(), err
}

// TestTraceBadInput checks that each kind of bad input gives an error that
// says what to do, and that nothing runs or stays attached.
func TestTraceBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	db := filepath.Join(t.TempDir(), "obs.db")
	marker := filepath.Join(t.TempDir(), "ran")
	script := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()

	cases := []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"attach without pid", []string{"attach", "-f", "main.*", "--db", db}, []string{"--pid, --exe or --cgroup is required"}},
		{"attach two --exe", []string{"attach", "--exe", "/bin/true", "--exe", "/bin/true", "-f", "main.*", "--db", db}, []string{"trace the same executable file", "give the file once"}},
		{"attach missing process", []string{"attach", "--pid", itoa(exitedPid(t)), "-f", "main.*", "--db", db}, []string{"no such process", "is the program running"}},
		{"attach non-Go process", []string{"attach", "--pid", itoa(sleeper.Process.Pid), "-f", "main.*", "--db", db}, []string{"not a Go binary"}},
		{"run without --", []string{"run", "-f", "main.*", "--db", db, calltree}, []string{"put the program after --"}},
		{"run missing program", []string{"run", "-f", "main.*", "--db", db, "--", "/nonexistent/prog"}, []string{"/nonexistent/prog"}},
		{"run a script", []string{"run", "-f", "main.*", "--db", db, "--", script}, []string{"not an ELF executable"}},
		{"run non-Go program", []string{"run", "-f", "main.*", "--db", db, "--", "/bin/true"}, []string{"not a Go binary"}},
		{"pattern matches nothing", []string{"run", "-f", "main.nestt", "--db", db, "--", calltree}, []string{"matches no function", "did you mean", "main.nest"}},
		{"too many sites", []string{"run", "-f", "main.*", "--max-probes", "5", "--db", db, "--", calltree}, []string{"--max-probes"}},
		{"no pattern", []string{"run", "--db", db, "--", calltree}, []string{"-f PATTERN"}},
		{"db is a directory", []string{"run", "-f", "main.*", "--db", t.TempDir(), "--", calltree}, []string{"--db: store: open", "it is a directory; a store is a file, e.g."}},
		{"everything excluded", []string{"run", "-f", "main.nest", "-x", "main.n*", "--db", db, "--", calltree}, []string{"excluded by a -x pattern"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := cli(t, c.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "not a Go binary"); n > 1 {
				t.Errorf("error says it %d times: %q", n, err)
			}
		})
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a refused program was run anyway")
	}
}

// exitedPid returns the pid of a process that has exited and been reaped:
// no process has it, until the kernel wraps around to it again.
func exitedPid(t *testing.T) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

// TestRunExitCode checks that run passes the program's output through and
// exits with the program's own exit code.
func TestRunExitCode(t *testing.T) {
	testutil.RequireRoot(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	db := filepath.Join(t.TempDir(), "obs.db")
	out, _, err := cli(t, "run", "-f", "main.*", "--db", db, "--", calltree)
	if err != nil || !strings.Contains(out, "result 419") {
		t.Fatalf("run: out %q err %v", out, err)
	}
	// An unknown mode makes calltree exit 2.
	_, _, err = cli(t, "run", "-f", "main.*", "--db", db, "--", calltree, "bogus")
	var ec exitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 2 {
		t.Fatalf("want exit code 2, got %v", err)
	}
}

// TestUnprivileged runs the real binary as nobody: it must refuse with what
// to do, before touching anything.
func TestUnprivileged(t *testing.T) {
	testutil.RequireRoot(t) // to switch to nobody
	dir, err := os.MkdirTemp("", "obs-agent-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agentBinary(t), "run", "-f", "main.*", "--db", filepath.Join(dir, "x.db"), "--", "/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v: %s", err, out)
	}
	if !strings.Contains(string(out), "needs root") || !strings.Contains(string(out), "CAP_BPF") {
		t.Fatalf("message does not say what is needed: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.db")); err == nil {
		t.Fatal("a store was created before the privilege check")
	}
}

// TestRunGroups traces package main, a package of the main module and one
// of the standard library: `query groups` puts main and settle in the main
// module named by the build info, fmt in std, and nothing in (unknown).
func TestRunGroups(t *testing.T) {
	testutil.RequireRoot(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree", Stripped: true})
	db := filepath.Join(t.TempDir(), "obs.db")
	if _, _, err := cli(t, "run", "-f", "main.*", "-f", "example.com/calltree/settle.*", "-f", "fmt.Fprintln",
		"--db", db, "--", calltree); err != nil {
		t.Fatal(err)
	}
	out, _, err := cli(t, "query", "groups", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	groups := map[any]float64{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var row struct {
			Group any     `json:"group"`
			Calls float64 `json:"calls"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		groups[row.Group] = row.Calls
	}
	// calltree tree prints its result with fmt.Println (Fprintln); settle.Wait
	// runs twice; package main makes the rest.
	if len(groups) != 2 || groups["std"] < 1 || groups["example.com/calltree"] < 3 {
		t.Fatalf("groups %v, want example.com/calltree and std", groups)
	}
	out, _, _ = cli(t, "query", "groups", "--db", db)
	if strings.Contains(out, "(unknown)") {
		t.Errorf("table shows an unknown module:\n%s", out)
	}
}
