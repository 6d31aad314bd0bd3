package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// unitCaps is the capability set of the packaged systemd unit, read from
// deploy/obs-agent.service so that this test checks what ships.
func unitCaps(t *testing.T) []string {
	t.Helper()
	unit, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "deploy", "obs-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.*)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("no CapabilityBoundingSet= in deploy/obs-agent.service")
	}
	return strings.Fields(string(m[1]))
}

// TestDaemonCapabilities runs the daemon as root with exactly the unit's
// capabilities (setpriv's bounding set) against the hardest target it is
// meant for: a process of another user whose executable only that user
// may read (0700). It must trace it call for call; and without
// CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH it must refuse it, which shows
// that each is needed.
func TestDaemonCapabilities(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	caps := unitCaps(t)
	// A directory that user nobody can enter, with a program only nobody
	// may read.
	shared, err := os.MkdirTemp("", "obs-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(testutil.BuildProgram(t, testutil.Build{Program: "phases"}))
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(shared, "phases")
	if err := os.WriteFile(prog, src, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(prog, 65534, 65534); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, drop, want string
	}{
		{"unit set", "", ""},
		{"without CAP_SYS_PTRACE", "CAP_SYS_PTRACE", "without CAP_SYS_PTRACE"},
		{"without CAP_DAC_READ_SEARCH", "CAP_DAC_READ_SEARCH", "may inspect the process but not read its executable file: " + prog + ": it is owned by user nobody (uid 65534), mode 0700; obs-agent runs without CAP_DAC_READ_SEARCH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var set []string
			for _, c := range caps {
				if c != tc.drop {
					set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
				}
			}
			target := exec.Command(prog, "wait", "6")
			target.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			stdin := startHeld(t, target)
			dir := t.TempDir()
			db := filepath.Join(dir, "obs.db")
			cfg := filepath.Join(dir, "obs-agent.yaml")
			ready := filepath.Join(dir, "ready")
			body := fmt.Sprintf("targets: [{pid: %d, include: ['main.alpha', 'main.beta']}]\nstore: {db: %s}\n", target.Process.Pid, db)
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			d := exec.Command("setpriv", "--bounding-set=-all,"+strings.Join(set, ","), "--inh-caps=-all", "--",
				agentBinary(t), "daemon", "--config", cfg, "--ready-file", ready)
			var stderr testutil.SyncBuffer
			d.Stderr = &stderr
			if tc.want != "" {
				err := d.Run()
				if err == nil || !strings.Contains(stderr.String(), tc.want) {
					t.Fatalf("daemon with %v: %v; want a refusal saying %q:\n%s", set, err, tc.want, stderr.String())
				}
				t.Log(stderr.String())
				return
			}
			if err := d.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Process.Kill(); d.Wait() })
			waitFor(t, "generation 1", &stderr, func() bool { _, err := os.Stat(ready); return err == nil })
			io.WriteString(stdin, "go\n")
			if err := target.Wait(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the end of the pid target", &stderr, func() bool {
				return strings.Contains(stderr.String(), "every target of the config has ended")
			})
			stopDaemon(t, d, &stderr)
			if s := sessionsOf(t, db); len(s) != 1 || s[0].CallsRecorded != 12 || s[0].CallsLost != 0 || s[0].End == 0 {
				t.Errorf("sessions %+v; want one, ended, 12 calls, none lost", s)
			}
		})
	}
}
