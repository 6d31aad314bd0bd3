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
	ready := filepath.Join(dir, "ready")
	agent := exec.Command(agentBinary(t), "attach", "--exe", target, "-f", "main.tick", "--db", db,
		"--ready-file", ready, "--sample-interval", "0")
	var stderr testutil.SyncBuffer
	agent.Stderr = &stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attach --exe not ready after 60 s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling for the ready file, not timing an event
	}
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
