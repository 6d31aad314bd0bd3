package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// systemdBinary is where Debian (and most distributions) keep the manager.
const systemdBinary = "/lib/systemd/systemd"

// bootSystemd starts a real systemd as PID 1 of a new pid and mount
// namespace, as a container manager would (the test machine has no
// systemd PID 1 of its own), and returns a function that runs a command
// inside that namespace and the namespace's root as seen from here
// (/proc/PID/root).
//
// Nothing that systemd does may reach the host: in the namespace every
// host file system is made read-only (so systemd-tmpfiles cannot clean
// the host's /tmp, for one), as are /proc/sys and /sys (so the units that
// would set sysctls or run udev are skipped by their own conditions, as in
// any container), and /run, /tmp, /var/lib, /var/log and
// /etc/systemd/system are empty tmpfs of its own. The unit goes into that
// /etc/systemd/system; setup, a shell snippet, runs first, while the
// host's /tmp is still visible, to copy files onto the namespace's
// /var/lib.
func bootSystemd(t *testing.T, unit, setup string) (in func(args ...string) (string, error), root string) {
	t.Helper()
	dir := t.TempDir()
	unitFile := filepath.Join(dir, "obs-agent.service")
	if err := os.WriteFile(unitFile, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `set -e
mount --make-rprivate /
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /var/lib
` + setup + `
mkdir -p /var/lib/obs-test/units
cp ` + unitFile + ` /var/lib/obs-test/units/obs-agent.service
printf '[Unit]\nDescription=obs-agent test\n' >/var/lib/obs-test/units/obs-test.target
mount -o remount,bind,ro /
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,bind,ro /sys
for d in /run /tmp /var/log /etc/systemd/system; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
cp /var/lib/obs-test/units/* /etc/systemd/system/
exec env container=obs-test ` + systemdBinary + ` --system --unit=obs-test.target
`
	boot := exec.Command("unshare", "--pid", "--mount", "--fork", "--kill-child", "--propagation", "private", "/bin/sh", "-c", script)
	log := &testutil.SyncBuffer{}
	boot.Stdout, boot.Stderr = log, log
	if err := boot.Start(); err != nil {
		t.Fatal(err)
	}
	var pid1 int
	t.Cleanup(func() {
		// When PID 1 of the namespace ends, the kernel kills every
		// process left in it.
		if pid1 != 0 {
			syscall.Kill(pid1, syscall.SIGKILL)
		}
		boot.Process.Kill()
		boot.Wait()
	})
	// unshare --fork: systemd is unshare's only child.
	waitUntil(t, 30*time.Second, "systemd to start", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", boot.Process.Pid, boot.Process.Pid))
		pid1, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if pid1 == 0 {
			return false
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid1))
		return exe == systemdBinary || strings.HasSuffix(exe, "/lib/systemd/systemd")
	}, log)
	in = func(args ...string) (string, error) {
		out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(pid1), "-m", "-p", "--"}, args...)...).CombinedOutput()
		return string(out), err
	}
	waitUntil(t, 120*time.Second, "systemd to finish starting", func() bool {
		out, _ := in("systemctl", "is-system-running")
		out = strings.TrimSpace(out)
		return out == "running" || out == "degraded"
	}, log)
	return in, fmt.Sprintf("/proc/%d/root", pid1)
}

// waitUntil polls cond (the state of another process) until it holds; the
// bound only turns a hang into a failure.
func waitUntil(t *testing.T, bound time.Duration, what string, cond func() bool, log *testutil.SyncBuffer) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s\n%s", bound, what, log.String())
		}
		time.Sleep(50 * time.Millisecond) // polling another process's state, not timing an event
	}
}

// TestSystemdUnit runs the shipped unit (deploy/obs-agent.service, with
// @PREFIX@ and @SYSCONFDIR@ replaced as make install does) under a real
// systemd: `systemctl start` must return only once the daemon said
// READY=1 (Type=notify); the running daemon must have exactly the unit's
// capability bounding set, no_new_privs, a read-only root and a private
// /tmp; it must trace a program started after it, call for call, into its
// state directory; `systemctl reload` must be taken (SIGHUP), and
// `systemctl stop` must end it cleanly (SIGTERM), its session row ended
// with nothing lost.
func TestSystemdUnit(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat(systemdBinary); err != nil {
		t.Skipf("systemd is not installed (%v): apt-get install systemd", err)
	}
	for _, tool := range []string{"unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s (util-linux) is not installed", tool)
		}
	}
	root := testutil.RepoRoot(t)
	unit, err := os.ReadFile(filepath.Join(root, "deploy", "obs-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	const (
		prefix  = "/var/lib/obs-test/prefix"
		sysconf = "/var/lib/obs-test/etc"
		prog    = "/var/lib/obs-test/phases"
		db      = "/var/lib/obs-agent/obs.db"
	)
	installed := strings.NewReplacer("@PREFIX@", prefix, "@SYSCONFDIR@", sysconf).Replace(string(unit))
	if strings.Contains(installed, "@") {
		t.Fatalf("the unit has a placeholder make install does not replace:\n%s", installed)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "obs-agent.yaml")
	if err := os.WriteFile(cfg, []byte(daemonConfig(prog, db, "main.*")), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := agentBinary(t)
	phases := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	// The program lives on the namespace's /var/lib, not under /tmp: the
	// unit's PrivateTmp would hide it from the daemon, as docs/config.md
	// says.
	setup := fmt.Sprintf(`install -D -m 0755 %s %s/bin/obs-agent
install -D -m 0600 %s %s/obs-agent/obs-agent.yaml
install -D -m 0755 %s %s`, agent, prefix, cfg, sysconf, phases, prog)
	in, nsRoot := bootSystemd(t, installed, setup)
	status := func() string {
		out, _ := in("systemctl", "status", "--no-pager", "obs-agent")
		j, _ := in("journalctl", "--no-pager", "-u", "obs-agent")
		return out + "\n" + j
	}

	// Type=notify: start returns once READY=1 came, that is once every
	// probe is in, so a program started right after is traced from its
	// first call.
	if out, err := in("systemctl", "start", "obs-agent"); err != nil {
		t.Fatalf("systemctl start obs-agent: %v\n%s\n%s", err, out, status())
	}
	show := func() map[string]string {
		out, err := in("systemctl", "show", "obs-agent", "-p", "MainPID,ActiveState,SubState,Result,StatusText,ExecMainStatus")
		if err != nil {
			t.Fatalf("systemctl show: %v\n%s", err, out)
		}
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(l, "=")
			m[k] = v
		}
		return m
	}
	st := show()
	if st["ActiveState"] != "active" || st["SubState"] != "running" || !strings.Contains(st["StatusText"], "generation 1") {
		t.Fatalf("after start: %v\n%s", st, status())
	}

	// The sandbox, as the kernel sees the daemon.
	procStatus, err := in("cat", "/proc/"+st["MainPID"]+"/status")
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, c := range unitCaps(t) {
		n, ok := capNumbers[c]
		if !ok {
			t.Fatalf("capability %s of the unit is not known to this test", c)
		}
		want |= 1 << n
	}
	fields := map[string]string{}
	for _, l := range strings.Split(procStatus, "\n") {
		k, v, _ := strings.Cut(l, ":")
		fields[k] = strings.TrimSpace(v)
	}
	for _, k := range []string{"CapBnd", "CapEff", "CapPrm"} {
		got, err := strconv.ParseUint(fields[k], 16, 64)
		if err != nil || got != want {
			t.Errorf("%s %s, want %016x (the unit's CapabilityBoundingSet)", k, fields[k], want)
		}
	}
	if fields["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs %q, want 1", fields["NoNewPrivs"])
	}
	mounts, err := in("cat", "/proc/"+st["MainPID"]+"/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	// mountinfo: "ID PARENT MAJ:MIN ROOT TARGET OPTIONS ..."; the last
	// mount on a target is the one the daemon sees.
	mount := func(target string) (root, opts string, found bool) {
		for _, l := range strings.Split(mounts, "\n") {
			f := strings.Fields(l)
			if len(f) > 5 && f[4] == target {
				root, opts, found = f[3], f[5], true
			}
		}
		return root, opts, found
	}
	// /var/lib is a read-write tmpfs in the namespace: the daemon must see
	// it read-only (ProtectSystem=strict) but for its state directory.
	for _, m := range []struct{ target, want string }{{"/var/lib", "ro"}, {"/var/lib/obs-agent", "rw"}} {
		if _, opts, _ := mount(m.target); !strings.HasPrefix(opts, m.want+",") {
			t.Errorf("%s is mounted %q in the daemon's namespace, want %s (ProtectSystem=strict, StateDirectory=)", m.target, opts, m.want)
		}
	}
	if root, _, _ := mount("/tmp"); !strings.Contains(root, "systemd-private-") {
		t.Errorf("the daemon's /tmp is %q, not a private one (PrivateTmp=yes)", root)
	}
	// A program started after the daemon, inside the namespace.
	if out, err := in(prog, "9"); err != nil {
		t.Fatalf("phases: %v\n%s", err, out)
	}
	// SIGHUP through systemd: the same file, taken as generation 2.
	if out, err := in("systemctl", "reload", "obs-agent"); err != nil {
		t.Fatalf("systemctl reload: %v\n%s\n%s", err, out, status())
	}
	waitUntil(t, 60*time.Second, "the reload to be taken", func() bool {
		return strings.Contains(show()["StatusText"], "generation 2")
	}, &testutil.SyncBuffer{})
	if out, err := in("systemctl", "stop", "obs-agent"); err != nil {
		t.Fatalf("systemctl stop: %v\n%s\n%s", err, out, status())
	}
	if st := show(); st["ActiveState"] != "inactive" || st["Result"] != "success" || st["ExecMainStatus"] != "0" {
		t.Fatalf("after stop: %v, want inactive, success, exit status 0\n%s", st, status())
	}

	// The store, copied out of the namespace's /var/lib.
	for _, f := range []string{"obs.db", "obs.db-wal"} {
		b, err := os.ReadFile(filepath.Join(nsRoot, filepath.Dir(db), f))
		if os.IsNotExist(err) && f != "obs.db" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := sessionsOf(t, filepath.Join(dir, "obs.db"))
	// main.main, 9 alpha and 9 beta.
	if len(s) != 1 || s[0].CallsRecorded != 19 || s[0].CallsLost != 0 || s[0].End == 0 {
		t.Errorf("sessions %+v; want one, ended, 19 calls, none lost\n%s", s, status())
	}
}

// capNumbers are the capabilities a unit may name, by number
// (linux/capability.h).
var capNumbers = map[string]uint{
	"CAP_DAC_READ_SEARCH": 2,
	"CAP_SYS_PTRACE":      19,
	"CAP_SYS_ADMIN":       21,
	"CAP_SYS_RESOURCE":    24,
	"CAP_PERFMON":         38,
	"CAP_BPF":             39,
}
