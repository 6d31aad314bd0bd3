package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

var (
	agentBinOnce sync.Once
	agentBin     string
	agentBinErr  error
)

// buildAgent builds the obs-agent binary once per test run: signal
// handling is only real in a real process.
func buildAgent(t *testing.T) string {
	t.Helper()
	agentBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "obs-agent-bin-")
		if err != nil {
			agentBinErr = err
			return
		}
		agentBin = filepath.Join(dir, "obs-agent")
		if out, err := exec.Command("go", "build", "-o", agentBin, ".").CombinedOutput(); err != nil {
			agentBinErr = errors.New("build obs-agent: " + err.Error() + "\n" + string(out))
		}
	})
	if agentBinErr != nil {
		t.Fatal(agentBinErr)
	}
	return agentBin
}

// agentRun is `obs-agent run` of testdata/signals, started in its own
// session (no controlling terminal), with the program ready for signals.
type agentRun struct {
	cmd    *exec.Cmd
	prog   int // the program's pid
	progFD int // pidfd of the program
	out    *bufio.Reader
	stderr *os.File // a file, not a pipe: an orphaned program holding it must not block Wait
	db     string
}

func (r *agentRun) stderrText() string {
	b, _ := os.ReadFile(r.stderr.Name())
	return string(b)
}

func startAgentRun(t *testing.T) *agentRun {
	t.Helper()
	bin := buildAgent(t)
	target := testutil.BuildProgram(t, testutil.Build{Program: "signals"})
	dir := t.TempDir()
	r := &agentRun{db: filepath.Join(dir, "obs.db")}
	var err error
	if r.stderr, err = os.Create(filepath.Join(dir, "stderr")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.stderr.Close() })
	ready := filepath.Join(dir, "ready")
	r.cmd = exec.Command(bin, "run", "-f", "main.*", "--db", r.db, "--ready-file", ready, "--", target)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	r.cmd.Stderr = r.stderr
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
	r.out = bufio.NewReader(stdout)
	// The program prints "ready" once its handlers are in; the probes were
	// live before it ran, so the ready file exists by then.
	if line, err := r.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("program's first line %q, %v; agent stderr:\n%s", line, err, r.stderrText())
	}
	b, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	if r.prog, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		t.Fatal(err)
	}
	if r.progFD, err = unix.PidfdOpen(r.prog, 0); err != nil {
		t.Fatalf("program pid %d: %v", r.prog, err)
	}
	t.Cleanup(func() {
		// Never leave the program behind, even when the test fails.
		unix.PidfdSendSignal(r.progFD, unix.SIGKILL, nil, 0)
		unix.Close(r.progFD)
	})
	return r
}

// gone checks that the program has exited: its pidfd is readable then,
// whoever reaped it.
func (r *agentRun) gone(t *testing.T) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(r.progFD), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 0); err != nil || n != 1 {
		t.Fatalf("program pid %d still runs after obs-agent exited (poll %d, %v)", r.prog, n, err)
	}
}

// TestRunForwardsSignals sends SIGINT, SIGTERM and SIGHUP to the obs-agent
// process alone: the program gets each one, obs-agent waits for it and
// exits with its code, nothing is left running, and the traced call made
// while handling the signal is in the store.
func TestRunForwardsSignals(t *testing.T) {
	testutil.RequireRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			r := startAgentRun(t)
			if err := r.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := r.cmd.Wait()
			want := 10 + int(sig)
			var ee *exec.ExitError
			if code := 0; !errors.As(err, &ee) || ee.ExitCode() != want {
				if ee != nil {
					code = ee.ExitCode()
				}
				t.Fatalf("obs-agent: %v (exit %d), want exit %d; stderr:\n%s", err, code, want, r.stderrText())
			}
			r.gone(t)
			if !strings.Contains(r.stderrText(), "target exited with code "+strconv.Itoa(want)) {
				t.Errorf("exit line does not give the program's code:\n%s", r.stderrText())
			}
			st, err := store.Open(r.db, store.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			calls, err := st.Calls(t.Context(), store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			handled := 0
			for _, c := range calls {
				if c.Function == "main.handle" {
					handled++
				}
			}
			if handled != 1 {
				t.Errorf("%d calls of main.handle recorded, want 1", handled)
			}
		})
	}
}

// TestRunCtrlC runs obs-agent on a terminal of its own and types Ctrl-C:
// the terminal sends SIGINT to its foreground process group, obs-agent and
// the program alike, so obs-agent must not send it a second time (the
// program would die of the second one, exit 130, instead of exiting 12).
func TestRunCtrlC(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildAgent(t)
	target := testutil.BuildProgram(t, testutil.Build{Program: "signals"})
	master, slave := testutil.OpenPTY(t)
	defer master.Close()
	cmd := exec.Command(bin, "--debug", "run", "-f", "main.*", "--db", filepath.Join(t.TempDir(), "obs.db"), "--", target, "-linger")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// A new session whose controlling terminal is the pty (fd 0 in the
	// child): obs-agent leads the terminal's foreground process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	out := bufio.NewReader(master)
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("no ready line from the program: %v", err)
		}
		if strings.TrimSpace(line) == "ready" {
			break
		}
	}
	if _, err := master.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	// obs-agent logs (--debug) what it did with the SIGINT; only then is
	// the program, which lingers, told to exit: a SIGINT forwarded on top
	// of the terminal's would have killed it by then.
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("obs-agent logged nothing about the SIGINT: %v", err)
		}
		if strings.Contains(line, "reached the program directly") || strings.Contains(line, "forwarded signal") {
			break
		}
	}
	if _, err := master.Write([]byte("exit\n")); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 12 {
		rest, _ := io.ReadAll(out)
		t.Fatalf("obs-agent: %v, want exit 12 (the program's code for one SIGINT); terminal:\n%s", err, rest)
	}
}
