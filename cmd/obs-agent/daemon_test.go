package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// daemonConfig is a config tracing every process of exe.
func daemonConfig(exe, db string, include ...string) string {
	q := make([]string, len(include))
	for i, p := range include {
		q[i] = "'" + p + "'"
	}
	return fmt.Sprintf("targets:\n  - exe: %s\n    include: [%s]\nstore:\n  db: %s\nlimits:\n  sample_interval: 0s\n",
		exe, strings.Join(q, ", "), db)
}

// waitFor polls cond (a file or a log line the daemon writes) until it
// holds; the 60 s bound only turns a hang into a failure.
func waitFor(t *testing.T, what string, stderr *testutil.SyncBuffer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("daemon: %s not seen after 60 s:\n%s", what, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling for the daemon's output, not timing an event
	}
}

// startHeld starts c, a `phases wait N`, and returns once it is ready;
// writing a line to the returned stdin lets it make its calls.
func startHeld(t *testing.T, c *exec.Cmd) io.Writer {
	t.Helper()
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil { // "ready"
		t.Fatal(err)
	}
	return stdin
}

// stopDaemon sends SIGTERM and wants a clean exit.
func stopDaemon(t *testing.T, d *exec.Cmd, stderr *testutil.SyncBuffer) {
	t.Helper()
	if err := d.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr.String())
	}
}

// sessionsOf reads every session row of the store at db.
func sessionsOf(t *testing.T, db string) []record.Session {
	t.Helper()
	q, err := query.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	s, err := q.Sessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startDaemon starts `obs-agent daemon --config cfg --ready-file ready`;
// it is killed at the end of the test if it is still running.
func startDaemon(t *testing.T, cfg, ready string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	d := exec.Command(agentBinary(t), "daemon", "--config", cfg, "--ready-file", ready)
	stderr := &testutil.SyncBuffer{}
	d.Stderr = stderr
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	return d, stderr
}

// copyProgram copies the program at src to each of dsts (a file of its
// own, another inode, for a test that needs two targets of one build).
func copyProgram(t *testing.T, src string, dsts ...string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dsts {
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// callsOf counts per function the calls stored for pid; every one must
// have returned ok (the phases program has no error).
func callsOf(t *testing.T, db string, pid int) map[string]int {
	t.Helper()
	out, _, err := cli(t, "query", "calls", "--db", db, "--pid", fmt.Sprint(pid), "--since", "0", "--limit", "0", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var c struct {
			Function, Status string
		}
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		if c.Status != "ok" {
			t.Errorf("pid %d: %s call with status %s", pid, c.Function, c.Status)
		}
		got[c.Function]++
	}
	return got
}

// TestDaemonTwoTargets runs the daemon with two exe targets (two copies
// of one program, each with its own patterns) in one agent and one store,
// with metrics.listen and otlp.endpoint (the in-process receiver): each
// process's calls are stored under its pid, exactly, with only its
// target's functions; a scrape of /metrics counts each target's calls
// under its binary; every stored call arrived once as a span with the
// resource of its own program and process.
func TestDaemonTwoTargets(t *testing.T) {
	testutil.RequireRoot(t)
	built := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	dir := t.TempDir()
	a, b := filepath.Join(dir, "phases-a"), filepath.Join(dir, "phases-b")
	copyProgram(t, built, a, b)
	db := filepath.Join(dir, "obs.db")
	cfg := filepath.Join(dir, "obs-agent.yaml")
	ready := filepath.Join(dir, "ready")
	rcv := otlptest.NewReceiver(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	body := fmt.Sprintf("targets:\n  - exe: %s\n    include: ['main.alpha']\n  - exe: %s\n    include: ['main.beta']\nstore:\n  db: %s\nlimits:\n  sample_interval: 0s\n"+
		"metrics:\n  listen: %s\notlp:\n  endpoint: %s\n", a, b, db, addr, rcv.URL())
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d, stderr := startDaemon(t, cfg, ready)
	waitFor(t, "generation 1", stderr, func() bool { b, _ := os.ReadFile(ready); return strings.TrimSpace(string(b)) == "1" })
	run := func(bin string, n int) int {
		t.Helper()
		c := exec.Command(bin, fmt.Sprint(n))
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s %d: %v\n%s", bin, n, err, out)
		}
		return c.Process.Pid
	}
	pa, pb := run(a, 6), run(b, 4)
	// The kernel counts each call as it returns: the processes have
	// exited, so the counts are final.
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	stopDaemon(t, d, stderr)
	if got := callsOf(t, db, pa); fmt.Sprint(got) != fmt.Sprint(map[string]int{"main.alpha": 6}) {
		t.Errorf("the first target's process: calls %v, want main.alpha 6", got)
	}
	if got := callsOf(t, db, pb); fmt.Sprint(got) != fmt.Sprint(map[string]int{"main.beta": 4}) {
		t.Errorf("the second target's process: calls %v, want main.beta 4", got)
	}
	_, calls, sessions := otlptest.ReadStore(t, db)
	if len(sessions) != 2 {
		t.Errorf("%d session rows, want one per target", len(sessions))
	}

	counts := map[string]float64{}
	for _, m := range fams["obs_agent_calls_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		counts[l["binary"]+" "+l["function"]] += m.GetCounter().GetValue()
	}
	want := map[string]float64{a + " main.alpha": 6, b + " main.beta": 4}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("/metrics calls by binary and function %v, want %v", counts, want)
	}
	if n := len(fams["obs_agent_session_info"].GetMetric()); n != 2 {
		t.Errorf("%d obs_agent_session_info series, want one per target", n)
	}

	rcv.Check(t, calls, false)
	rcv.CheckProcesses(t, calls, sessions)
	if !strings.Contains(stderr.String(), "otlp sink: sent 10 records, lost 0") {
		t.Errorf("the daemon's log does not give the otlp sink's account:\n%s", stderr.String())
	}
}

// TestDaemonReload runs `obs-agent daemon` with an exe target and
// programs started after it: a SIGHUP that adds a pattern makes the new
// function recorded from the next process on while nothing of the old
// selection is lost (exact counts per process), a reload that changes
// nothing keeps the session running, a file that does not
// load and one whose pattern matches nothing are refused with the old
// config still tracing, and SIGTERM stores everything and ends every
// session row.
func TestDaemonReload(t *testing.T) {
	testutil.RequireRoot(t)
	target := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	cfg := filepath.Join(dir, "obs-agent.yaml")
	ready := filepath.Join(dir, "ready")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(daemonConfig(target, db, "main.alpha"))
	d, stderr := startDaemon(t, cfg, ready)
	generation := func(want string) func() bool {
		return func() bool { b, _ := os.ReadFile(ready); return strings.TrimSpace(string(b)) == want }
	}
	waitFor(t, "generation 1", stderr, generation("1"))

	var pids []int
	phase := func(n int) {
		t.Helper()
		c := exec.Command(target, fmt.Sprint(n))
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("phases %d: %v\n%s", n, err, out)
		}
		pids = append(pids, c.Process.Pid)
	}
	phase(7) // started after the daemon: alpha traced, beta not

	// A process that lives across the switch and calls only after it.
	long := exec.Command(target, "wait", "4")
	stdin := startHeld(t, long)

	write(daemonConfig(target, db, "main.alpha", "main.beta"))
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 2", stderr, generation("2"))
	phase(5) // both traced
	stdin.Write([]byte("go\n"))
	if err := long.Wait(); err != nil {
		t.Fatal(err)
	}
	pids = append(pids, long.Process.Pid)

	// Only a comment changed: the session keeps running (no third
	// session at the end, no window).
	write(daemonConfig(target, db, "main.alpha", "main.beta") + "# reviewed\n")
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 3", stderr, generation("3"))
	if !strings.Contains(stderr.String(), "targets unchanged: they keep running") {
		t.Errorf("an unchanged reload did not keep the session:\n%s", stderr.String())
	}

	refusals := func(n int) func() bool {
		return func() bool { return strings.Count(stderr.String(), "config reload refused") == n }
	}
	write(daemonConfig(target, db, "main.alpha") + "bogus: 1\n")
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the refusal of an unknown key", stderr, refusals(1))
	write(daemonConfig(target, db, "main.alpha", "main.nosuch"))
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the refusal of a pattern that matches nothing", stderr, refusals(2))
	phase(3) // generation 3 (= 2) still in force: both traced

	stopDaemon(t, d, stderr)
	log := stderr.String()
	for _, want := range []string{`unknown key \"bogus\"`, `pattern \"main.nosuch\" matches no function`, "stopped: every record is stored"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if b, _ := os.ReadFile(ready); strings.TrimSpace(string(b)) != "3" {
		t.Errorf("ready file %q: the refused reloads must not count as generations", b)
	}

	// Exact counts per process: 7 alpha before the reload; 5+5, 4+4 (the
	// process started before the reload) and 3+3 after it.
	want := []map[string]int{{"main.alpha": 7}, {"main.alpha": 5, "main.beta": 5}, {"main.alpha": 4, "main.beta": 4}, {"main.alpha": 3, "main.beta": 3}}
	for i, pid := range pids {
		if got := callsOf(t, db, pid); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("process %d (pid %d): calls %v, want %v", i, pid, got, want[i])
		}
	}

	// Two sessions (one per config in force), both ended by the daemon.
	sessions := sessionsOf(t, db)
	if len(sessions) != 2 {
		t.Fatalf("%d sessions, want 2: %+v", len(sessions), sessions)
	}
	for i, s := range sessions {
		if s.End == 0 || s.ExitReason != "interrupted" || s.CallsLost != 0 {
			t.Errorf("session %d: end %d, exit %q, lost %d; want ended, interrupted, nothing lost", i, s.End, s.ExitReason, s.CallsLost)
		}
	}
	if sessions[0].CallsRecorded != 7 || sessions[1].CallsRecorded != 24 {
		t.Errorf("sessions recorded %d and %d calls, want 7 and 24", sessions[0].CallsRecorded, sessions[1].CallsRecorded)
	}
	if sessions[0].Patterns != "main.alpha" || sessions[1].Patterns != "main.alpha main.beta" {
		t.Errorf("session patterns %q and %q", sessions[0].Patterns, sessions[1].Patterns)
	}
}

// TestDaemonRefusesAtStart: a config the daemon cannot run fails the
// command with the key named, before anything is attached or created.
func TestDaemonRefusesAtStart(t *testing.T) {
	testutil.RequireRoot(t)
	target := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	for _, tc := range []struct{ name, body, want string }{
		{"cgroup", fmt.Sprintf("targets: [{cgroup: %s, include: ['main.*']}]\nstore: {db: %s}\n", filepath.Join(dir, "nocgroup"), db),
			"targets[0].cgroup: "},
		{"missing exe", daemonConfig(filepath.Join(dir, "none"), db, "main.alpha"), "targets[0].exe"},
		{"range", daemonConfig(target, db, "main.alpha") + "  memory_mib: 1\n", "limits.memory_mib 1 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, "c.yaml")
			if err := os.WriteFile(cfg, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := cli(t, "daemon", "--config", cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("daemon: %v; want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(db); err == nil {
				t.Fatalf("the store was created by a refused config")
			}
		})
	}
	// --check accepts what the daemon would run.
	cfg := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(cfg, []byte(daemonConfig(target, db, "main.*")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := cli(t, "daemon", "--config", cfg, "--check")
	if err != nil || !strings.Contains(out, "ok (1 target)") {
		t.Fatalf("--check: %q, %v", out, err)
	}
}

// TestDaemonPIDTarget: a pid target is traced until it exits; the daemon
// then stays up, idle, until SIGTERM. It serves the UI meanwhile, whose URL
// with the token is in the 0600 url file, not in the log.
func TestDaemonPIDTarget(t *testing.T) {
	testutil.RequireRoot(t)
	target := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	cfg := filepath.Join(dir, "obs-agent.yaml")
	ready := filepath.Join(dir, "ready")
	p := exec.Command(target, "wait", "6")
	stdin := startHeld(t, p)
	urlFile := filepath.Join(dir, "ui.url")
	body := fmt.Sprintf("targets: [{pid: %d, include: ['main.alpha', 'main.beta']}]\nstore: {db: %s}\nui: {listen: '127.0.0.1:0', url_file: %s}\n",
		p.Process.Pid, db, urlFile)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d, stderr := startDaemon(t, cfg, ready)
	waitFor(t, "generation 1", stderr, func() bool { _, err := os.Stat(ready); return err == nil })
	stdin.Write([]byte("go\n"))
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the end of the pid target", stderr, func() bool {
		return strings.Contains(stderr.String(), "every target of the config has ended")
	})
	u, err := os.ReadFile(urlFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(urlFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("ui url file mode %v, want 0600", fi.Mode().Perm())
	}
	base, token, ok := strings.Cut(strings.TrimSpace(string(u)), "/?token=")
	if !ok || strings.Contains(stderr.String(), token) {
		t.Fatalf("ui url %q (the token must not be in the log)", u)
	}
	req, _ := http.NewRequest("GET", base+"/api/sessions", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), fmt.Sprintf(`"pid":%d`, p.Process.Pid)) {
		t.Errorf("GET /api/sessions: %d %s", resp.StatusCode, page)
	}
	stopDaemon(t, d, stderr)
	if sessions := sessionsOf(t, db); len(sessions) != 1 || sessions[0].End == 0 || sessions[0].ExitReason != "target exited" || sessions[0].CallsRecorded != 12 || int(sessions[0].PID) != p.Process.Pid {
		t.Errorf("sessions %+v; want one, of pid %d, ended, target exited, 12 calls", sessionsOf(t, db), p.Process.Pid)
	}
}

// TestDaemonExampleConfig runs the daemon with deploy/obs-agent.yaml, only
// its target and store path changed, and a program started after it.
func TestDaemonExampleConfig(t *testing.T) {
	testutil.RequireRoot(t)
	target := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	example, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "deploy", "obs-agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(example, &c); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	c["targets"] = []map[string]any{{"exe": target, "include": []string{"main.*"}}}
	c["store"].(map[string]any)["db"] = db
	body, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "obs-agent.yaml")
	ready := filepath.Join(dir, "ready")
	if err := os.WriteFile(cfg, body, 0o600); err != nil {
		t.Fatal(err)
	}
	d, stderr := startDaemon(t, cfg, ready)
	waitFor(t, "generation 1", stderr, func() bool { _, err := os.Stat(ready); return err == nil })
	if out, err := exec.Command(target, "9").CombinedOutput(); err != nil {
		t.Fatalf("phases: %v\n%s", err, out)
	}
	stopDaemon(t, d, stderr)
	s := sessionsOf(t, db)
	// main.main, 9 alpha and 9 beta.
	if len(s) != 1 || s[0].CallsRecorded != 19 || s[0].CallsLost != 0 || s[0].End == 0 {
		t.Errorf("sessions %+v; want one, ended, 19 calls, none lost\n%s", s, stderr.String())
	}
}
