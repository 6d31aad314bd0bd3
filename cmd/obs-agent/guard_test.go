package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/safefile"
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

// TestTraceFiles runs `run` end to end against files planted by uid 65534
// at --db, --ready-file and --archive in a sticky shared directory (refused before the
// program runs, nothing written through them), then with --group: the store
// is 0640 and the group's. An unknown group is refused before anything
// runs.
func TestTraceFiles(t *testing.T) {
	testutil.RequireRoot(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	for _, flag := range []string{"--db", "--ready-file", "--archive"} {
		for _, p := range testutil.Plants {
			t.Run(flag+"/"+p.Name, func(t *testing.T) {
				dirs := testutil.NewSharedDirs(t)
				planted := filepath.Join(dirs.Sticky, "planted")
				testutil.AsNobody(t, p.Script(planted, dirs.Victim))
				db := filepath.Join(t.TempDir(), "obs.db")
				args := []string{"run", "-f", "main.*", "--db", db, "--ready-file", filepath.Join(t.TempDir(), "ready"), "--archive", t.TempDir()}
				for i := range args {
					if args[i] == flag {
						args[i+1] = planted
					}
				}
				out, _, err := cli(t, append(args, "--", calltree)...)
				dirs.CheckRefused(t, err)
				if strings.Contains(out, "result") {
					t.Fatal("the program ran although its output could not be written safely")
				}
				if st, err := os.Lstat(planted); err != nil || st.Sys().(*syscall.Stat_t).Uid != testutil.Nobody {
					t.Errorf("the planted name was replaced: %v", err)
				}
			})
		}
	}
	t.Run("--group", func(t *testing.T) {
		defer safefile.SetDataGroup(-1)
		db := filepath.Join(t.TempDir(), "obs.db")
		if _, _, err := cli(t, "run", "-f", "main.*", "--db", db, "--group", "no-such-group-obs", "--", calltree); err == nil || !strings.Contains(err.Error(), "--group") {
			t.Fatalf("unknown group: err = %v", err)
		}
		if _, err := os.Stat(db); err == nil {
			t.Fatal("a store was created with an unknown group")
		}
		g, err := user.LookupGroup("nogroup")
		if err != nil {
			t.Skip("no group nogroup on this host")
		}
		if _, _, err := cli(t, "run", "-f", "main.*", "--db", db, "--group", "nogroup", "--", calltree); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		if gid := strconv.Itoa(int(st.Sys().(*syscall.Stat_t).Gid)); st.Mode() != 0o640 || gid != g.Gid {
			t.Errorf("store mode %v group %s, want 0640 group %s", st.Mode(), gid, g.Gid)
		}
	})
}
