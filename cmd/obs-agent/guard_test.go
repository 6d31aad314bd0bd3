package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestSecondAgentAndSelf runs a real obs-agent (the built binary) attached
// to a real Go program, then checks from a second agent that:
//   - attaching to the same program is refused, naming the first agent's pid;
//   - attaching to the first agent is refused (it is obs-agent);
//   - `run` of the obs-agent binary is refused;
//   - once the first agent is killed with SIGKILL, its lock is gone and the
//     second agent attaches.
func TestSecondAgentAndSelf(t *testing.T) {
	testutil.RequireRoot(t)
	errs := testutil.BuildProgram(t, testutil.Build{Program: "errs"})
	dir := t.TempDir()
	agentBin := filepath.Join(dir, "obs-agent")
	if out, err := exec.Command("go", "build", "-o", agentBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	target := exec.Command(errs, "hang")
	tout, err := target.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { target.Process.Kill(); target.Wait() }()
	if line, err := bufio.NewReader(tout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("target: %q, %v", line, err)
	}
	tpid := strconv.Itoa(target.Process.Pid)

	ready := filepath.Join(dir, "ready")
	first := exec.Command(agentBin, "attach", "--pid", tpid, "-f", "main.*", "--db", filepath.Join(dir, "first.db"), "--ready-file", ready)
	var ferr bytes.Buffer
	first.Stderr = &ferr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { first.Process.Kill(); first.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil && strings.TrimSpace(string(b)) == tpid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first agent never became ready:\n%s", ferr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling for the ready file, not timing an event
	}
	fpid := strconv.Itoa(first.Process.Pid)
	db := filepath.Join(dir, "second.db")

	_, _, err = cli(t, "attach", "--pid", tpid, "-f", "main.*", "--db", db, "--duration", "1s")
	if !errors.Is(err, agent.ErrTargetBusy) || !strings.Contains(err.Error(), "obs-agent pid "+fpid) {
		t.Fatalf("second agent on the same process: err = %v, want one naming obs-agent pid %s", err, fpid)
	}
	t.Log(err)
	_, _, err = cli(t, "attach", "--pid", fpid, "-f", "main.*", "--db", db, "--duration", "1s")
	if !errors.Is(err, agent.ErrSelf) {
		t.Fatalf("attach to an obs-agent: err = %v, want ErrSelf", err)
	}
	t.Log(err)
	_, _, err = cli(t, "run", "-f", "main.*", "--db", db, "--", agentBin, "version")
	if !errors.Is(err, agent.ErrSelf) {
		t.Fatalf("run of obs-agent: err = %v, want ErrSelf", err)
	}
	t.Log(err)
	if _, err := os.Stat(db); err == nil {
		t.Fatal("a refused agent created its store")
	}

	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	if _, stderr, err := cli(t, "attach", "--pid", tpid, "-f", "main.*", "--db", db, "--duration", "1s"); err != nil {
		t.Fatalf("attach after the first agent was killed: %v\n%s", err, stderr)
	}
}
