package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestAttachExeCLI drives `attach --exe` through the real binary: a program
// started twice while the agent runs is traced twice, and `query
// processes`, `query calls --pid` and `query stats --pid` tell the runs
// apart after the agent has exited.
func TestAttachExeCLI(t *testing.T) {
	testutil.RequireRoot(t)
	target := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	agent, stderr := startAttach(t, db, "--exe", target)
	var pids []string
	for _, n := range []string{"15", "25"} {
		c := exec.Command(target, "count", n)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("procs count %s: %v\n%s", n, err, out)
		}
		pids = append(pids, itoa(c.Process.Pid))
	}
	if err := agent.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := agent.Wait(); err != nil {
		t.Fatalf("attach --exe: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), target+" (2 processes): interrupted; recorded 40 calls, lost 0") {
		t.Errorf("exit line does not say 2 processes, 40 calls, none lost:\n%s", stderr.String())
	}

	out, _, err := cli(t, "query", "processes", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("query processes: %v: %q", err, line)
		}
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("query processes: %d rows, want 2:\n%s", len(got), out)
	}
	for i, want := range []string{"15", "25"} {
		if p := itoa(int(got[i]["pid"].(float64))); p != pids[i] || got[i]["exit_reason"] != "exited" || got[i]["binary"] != target {
			t.Errorf("process %d: %v; want pid %s, exited, binary %s", i, got[i], pids[i], target)
		}
		calls, _, err := cli(t, "query", "calls", "--db", db, "--pid", pids[i], "--since", "0", "--limit", "0", "--format", "csv")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(calls, "main.tick"); itoa(n) != want {
			t.Errorf("query calls --pid %s: %d calls, want %s", pids[i], n, want)
		}
		stats, _, err := cli(t, "query", "stats", "--db", db, "--pid", pids[i], "--since", "0", "--format", "json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stats, `"calls":`+want+`,`) {
			t.Errorf("query stats --pid %s: want %s calls:\n%s", pids[i], want, stats)
		}
	}

	// One more run of the program, in a session of its own: `query stats
	// --binary` and `query calls --binary` take the three processes, by
	// path or by file name.
	if out, _, err := cli(t, "run", "--db", db, "-f", "main.tick", "--sample-interval", "0", "--", target, "count", "7"); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	for _, b := range []string{target, filepath.Base(target)} {
		stats, _, err := cli(t, "query", "stats", "--db", db, "--binary", b, "--since", "0", "--format", "json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stats, `"calls":47,`) {
			t.Errorf("query stats --binary %s: want 15+25+7 = 47 calls:\n%s", b, stats)
		}
		calls, _, err := cli(t, "query", "calls", "--db", db, "--binary", b, "--since", "0", "--limit", "0", "--format", "csv")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(calls, "main.tick"); n != 47 {
			t.Errorf("query calls --binary %s: %d calls, want 47", b, n)
		}
	}
	if _, _, err := cli(t, "query", "stats", "--db", db, "--binary", "/srv/nothing", "--since", "0"); err == nil ||
		!strings.Contains(err.Error(), "--binary /srv/nothing: no traced process ran it; the store has processes of "+target+" (") {
		t.Errorf("query stats --binary of a program never traced: %v; want an error naming the store's binaries", err)
	}
}

// startAttach starts `obs-agent attach ARGS -f main.tick` on db and
// returns once every probe is live, with its stderr.
func startAttach(t *testing.T, db string, args ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	return startAttachArgs(t, db, append(args, "-f", "main.tick")...)
}

// startAttachArgs is startAttach with the patterns in args.
func startAttachArgs(t *testing.T, db string, args ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	agent := exec.Command(agentBinary(t), append(append([]string{"attach"}, args...), "--db", db,
		"--ready-file", ready, "--sample-interval", "0")...)
	stderr := &testutil.SyncBuffer{}
	agent.Stderr = stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			return agent, stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("attach %v not ready after 60 s:\n%s", args, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling for the ready file, not timing an event
	}
}

// TestAttachTargetsCLI drives `attach --exe A --exe B` through the real
// binary: one agent, one store, each file's processes under their own pid
// and binary, and an exit line with a line per target.
func TestAttachTargetsCLI(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	copyProgram(t, bin, a, b)
	db := filepath.Join(dir, "obs.db")
	agent, stderr := startAttach(t, db, "--exe", a, "--exe", b)
	want := map[string]string{}
	for _, r := range [][2]string{{a, "15"}, {b, "25"}} {
		c := exec.Command(r[0], "count", r[1])
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s count %s: %v\n%s", r[0], r[1], err, out)
		}
		want[itoa(c.Process.Pid)] = r[0]
	}
	if err := agent.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := agent.Wait(); err != nil {
		t.Fatalf("attach: %v\n%s", err, stderr.String())
	}
	for _, line := range []string{"2 targets (2 processes): interrupted; recorded 40 calls, lost 0",
		a + " (1 processes): interrupted; recorded 15 calls", b + " (1 processes): interrupted; recorded 25 calls"} {
		if !strings.Contains(stderr.String(), line) {
			t.Errorf("exit line does not say %q:\n%s", line, stderr.String())
		}
	}
	out, _, err := cli(t, "query", "processes", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	for _, line := range rows {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("query processes: %v: %q", err, line)
		}
		if pid := itoa(int(m["pid"].(float64))); want[pid] != m["binary"] {
			t.Errorf("process row %v: want binary %q", m, want[pid])
		}
	}
	if len(rows) != 2 {
		t.Errorf("query processes: %d rows, want 2:\n%s", len(rows), out)
	}
}
