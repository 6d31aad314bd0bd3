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
	"github.com/obs-agent/obs-agent/internal/render"
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
	waitUntil(t, 60*time.Second, "daemon: "+what, cond, stderr)
}

// startHeld starts c, a `phases wait N`, and returns once it is ready;
// writing a line to the returned stdin lets it make its calls.
func startHeld(t *testing.T, c *exec.Cmd) io.Writer {
	t.Helper()
	stdin, stdout := startPiped(t, c)
	if _, err := stdout.ReadString('\n'); err != nil { // "ready"
		t.Fatal(err)
	}
	return stdin
}

// startServe starts c, a `phases serve`; say sends it a command (none
// for "") and returns its answer.
func startServe(t *testing.T, c *exec.Cmd) (in io.WriteCloser, say func(string) string) {
	t.Helper()
	in, out := startPiped(t, c)
	return in, func(cmd string) string {
		t.Helper()
		if cmd != "" {
			if _, err := io.WriteString(in, cmd+"\n"); err != nil {
				t.Fatal(err)
			}
		}
		l, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("phases: %v", err)
		}
		return strings.TrimSpace(l)
	}
}

// startPiped starts c with pipes to its stdin and from its stdout; it is
// killed at the end of the test if it still runs.
func startPiped(t *testing.T, c *exec.Cmd) (io.WriteCloser, *bufio.Reader) {
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
	return stdin, bufio.NewReader(stdout)
}

// daemonFiles builds testdata/phases and names the store, config and
// ready file of a daemon test in a directory of its own.
func daemonFiles(t *testing.T) (target, db, cfg, ready string) {
	t.Helper()
	target = testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	dir := t.TempDir()
	return target, filepath.Join(dir, "obs.db"), filepath.Join(dir, "obs-agent.yaml"), filepath.Join(dir, "ready")
}

// generationIs reports whether the daemon's ready file holds generation
// want.
func generationIs(ready, want string) bool {
	b, _ := os.ReadFile(ready)
	return strings.TrimSpace(string(b)) == want
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
// resource of its own program and process; a reload that removes one
// target (in place) ends its session row ("removed by reload") while the
// other's goes on.
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
	sinks := fmt.Sprintf("metrics:\n  listen: %s\notlp:\n  endpoint: %s\n", addr, rcv.URL())
	body := fmt.Sprintf("targets:\n  - exe: %s\n    include: ['main.alpha']\n  - exe: %s\n    include: ['main.beta']\nstore:\n  db: %s\nlimits:\n  sample_interval: 0s\n", a, b, db) + sinks
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
	// A reload that removes the second target: it is detached and its
	// session row ended, while the first one's session goes on.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("targets:\n  - exe: %s\n    include: ['main.alpha']\nstore:\n  db: %s\nlimits:\n  sample_interval: 0s\n", a, db)+sinks), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 2", stderr, func() bool { b, _ := os.ReadFile(ready); return strings.TrimSpace(string(b)) == "2" })
	pa2, pb2 := run(a, 3), run(b, 2)
	stopDaemon(t, d, stderr)
	if !strings.Contains(stderr.String(), "targets updated in place") {
		t.Errorf("removing a target was not done in place:\n%s", stderr.String())
	}
	if got := callsOf(t, db, pa2); fmt.Sprint(got) != fmt.Sprint(map[string]int{"main.alpha": 3}) {
		t.Errorf("the kept target's process after the reload: calls %v, want main.alpha 3", got)
	}
	if got := callsOf(t, db, pb2); len(got) != 0 {
		t.Errorf("the removed target's process after the reload: calls %v, want none", got)
	}
	for _, s := range sessionsOf(t, db) {
		want := map[string]struct {
			reason   string
			recorded uint64
		}{a: {"interrupted", 9}, b: {"removed by reload", 4}}[s.Binary]
		if s.ExitReason != want.reason || s.CallsRecorded != want.recorded || s.End == 0 {
			t.Errorf("session of %s: exit %q, recorded %d, end %d; want %q, %d, ended", s.Binary, s.ExitReason, s.CallsRecorded, s.End, want.reason, want.recorded)
		}
	}
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
	if !strings.Contains(stderr.String(), "otlp sink: sent 13 records, lost 0") {
		t.Errorf("the daemon's log does not give the otlp sink's account:\n%s", stderr.String())
	}
}

// TestDaemonReload runs `obs-agent daemon` with an exe target and
// programs started after it: a SIGHUP that adds a pattern makes the new
// function recorded from the next process on, in the same session, while
// nothing of the old selection is lost (exact counts per process), a
// reload that changes nothing keeps the session running, a file that does
// not load and one whose pattern matches nothing are refused with the old
// config still tracing, a change of the limits replaces the session (its
// row says "replaced by a reload"), and SIGTERM stores everything and
// ends every session row.
func TestDaemonReload(t *testing.T) {
	testutil.RequireRoot(t)
	target, db, cfg, ready := daemonFiles(t)
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(daemonConfig(target, db, "main.alpha"))
	d, stderr := startDaemon(t, cfg, ready)
	generation := func(want string) func() bool { return func() bool { return generationIs(ready, want) } }
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

	// A change of the limits cannot be applied in place: the session is
	// replaced, and its row says so.
	write(daemonConfig(target, db, "main.alpha", "main.beta") + "  memory_mib: 200\n")
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 4", stderr, generation("4"))
	phase(2)

	stopDaemon(t, d, stderr)
	log := stderr.String()
	for _, want := range []string{`unknown key \"bogus\"`, `pattern \"main.nosuch\" matches no function`, "stopped: every record is stored"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if b, _ := os.ReadFile(ready); strings.TrimSpace(string(b)) != "4" {
		t.Errorf("ready file %q: the refused reloads must not count as generations", b)
	}

	// Exact counts per process: 7 alpha before the reload; 5+5, 4+4 (the
	// process started before the reload) and 3+3 after it.
	want := []map[string]int{{"main.alpha": 7}, {"main.alpha": 5, "main.beta": 5}, {"main.alpha": 4, "main.beta": 4}, {"main.alpha": 3, "main.beta": 3}, {"main.alpha": 2, "main.beta": 2}}
	for i, pid := range pids {
		if got := callsOf(t, db, pid); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("process %d (pid %d): calls %v, want %v", i, pid, got, want[i])
		}
	}

	// One session: the reload changed the patterns of the running one in
	// place (TestDaemonReloadInPlace checks there was no window).
	if !strings.Contains(log, "targets updated in place") {
		t.Errorf("the pattern change was not applied in place:\n%s", log)
	}
	sessions := sessionsOf(t, db)
	if len(sessions) != 2 {
		t.Fatalf("%d sessions, want 2 (the limits change restarts): %+v", len(sessions), sessions)
	}
	for i, want := range []struct {
		reason   string
		recorded uint64
	}{{"replaced by a reload", 31}, {"interrupted", 4}} {
		s := sessions[i]
		if s.End == 0 || s.ExitReason != want.reason || s.CallsLost != 0 || s.CallsRecorded != want.recorded {
			t.Errorf("session %d: end %d, exit %q, lost %d, recorded %d; want ended, %q, nothing lost, %d recorded",
				i, s.End, s.ExitReason, s.CallsLost, s.CallsRecorded, want.reason, want.recorded)
		}
	}
}

// TestDaemonReloadInPlace: a SIGHUP that adds a pattern and removes
// another while the target calls a kept function back to back, all
// inside one call of main.outer that is open across the reload (testdata/
// phases serve). Every call of the kept function is recorded, exactly:
// no window without probes; the added function is recorded from the
// reload on and the removed one no longer; every call, before and after,
// has outer's call as its parent; and it stays one session. The old
// behaviour, a stop and a new start, fails each of these: the calls made
// while no probe was attached are lost, outer is left unfinished in the
// first session and its children in the second are roots.
func TestDaemonReloadInPlace(t *testing.T) {
	testutil.RequireRoot(t)
	target, db, cfg, ready := daemonFiles(t)
	write := func(include ...string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(daemonConfig(target, db, include...)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("main.outer", "main.alpha", "main.beta")
	d, stderr := startDaemon(t, cfg, ready)
	generation := func(want string) func() bool { return func() bool { return generationIs(ready, want) } }
	waitFor(t, "generation 1", stderr, generation("1"))

	p := exec.Command(target, "serve")
	in, say := startServe(t, p)
	if l := say(""); l != "ready" {
		t.Fatalf("phases: %q", l)
	}
	const steps = 10
	for range steps {
		say("step")
	}
	if l := say("spin"); l != "spinning" {
		t.Fatalf("phases: %q", l)
	}
	write("main.outer", "main.alpha", "main.gamma")
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 2", stderr, generation("2"))
	var spun int
	if _, err := fmt.Sscanf(say("stop"), "spun %d", &spun); err != nil {
		t.Fatal(err)
	}
	for range steps {
		say("step")
	}
	if l := say("end"); l != "done" {
		t.Fatalf("phases: %q", l)
	}
	in.Close()
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	stopDaemon(t, d, stderr)
	log := stderr.String()
	if !strings.Contains(log, "targets updated in place") {
		t.Errorf("the reload was not applied in place:\n%s", log)
	}
	for _, what := range []string{"selection changed in place", "targets updated in place"} {
		if i := strings.Index(log, what); i >= 0 {
			line := log[i:]
			t.Logf("%s", line[:strings.IndexByte(line, '\n')])
		}
	}

	// Every call from the aggregates (`query stats --pid`): a record the
	// store sink shed under load is counted there too.
	count, lost := statsOf(t, db, p.Process.Pid)
	t.Logf("calls %v (%d not stored, counted), %d rounds spun across the reload", count, lost, spun)
	if count["main.outer"] != 1 {
		t.Errorf("main.outer: %d calls, want 1 (open across the reload)", count["main.outer"])
	}
	if want := 2*steps + spun; count["main.alpha"] != want {
		t.Errorf("main.alpha, kept: %d calls, want exactly %d (%d steps, %d spun across the reload)", count["main.alpha"], want, 2*steps, spun)
	}
	if n := count["main.beta"]; n < steps || n > steps+spun {
		t.Errorf("main.beta, removed: %d calls, want %d before the reload and none after (%d to %d)", n, steps, steps, steps+spun)
	}
	if n := count["main.gamma"]; n < steps || n > steps+spun {
		t.Errorf("main.gamma, added: %d calls, want %d after the reload and none before (%d to %d)", n, steps, steps, steps+spun)
	}
	if n := count["main.beta"] + count["main.gamma"]; n < 2*steps+spun {
		// Each spun round calls both: until the switch beta is traced,
		// from the switch gamma, and the two overlap by at most the
		// round in flight.
		t.Errorf("main.beta + main.gamma: %d calls, want at least %d: rounds with neither traced", n, 2*steps+spun)
	}

	checkUnderOuter(t, db, p.Process.Pid)
	if sessions := sessionsOf(t, db); len(sessions) != 1 {
		t.Errorf("%d sessions, want 1: the reload must not start a new one", len(sessions))
	}
}

// statsOf is the calls of each function of pid in the aggregates (`query
// stats --pid`), and how many of them were not stored: a record the store
// sink shed under load is counted there too.
func statsOf(t *testing.T, db string, pid int) (count map[string]int, lost int) {
	t.Helper()
	stats, _, err := cli(t, "query", "stats", "--db", db, "--pid", fmt.Sprint(pid), "--since", "0", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	count = map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(stats), "\n") {
		var r struct {
			Function    string
			Calls, Lost int
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		count[r.Function] += r.Calls
		lost += r.Lost
	}
	return count, lost
}

// checkUnderOuter wants every stored call of pid, a `phases serve`, to be
// ok and to have its one call of main.outer (open across a reload) as
// parent.
func checkUnderOuter(t *testing.T, db string, pid int) {
	t.Helper()
	rows, _, err := cli(t, "query", "calls", "--db", db, "--pid", fmt.Sprint(pid), "--since", "0", "--limit", "0", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var outerID uint64
	var children []render.CallRecord
	for _, line := range strings.Split(strings.TrimSpace(rows), "\n") {
		var c render.CallRecord
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		if c.Status != "ok" {
			t.Errorf("%s call %d with status %s", c.Function, c.ID, c.Status)
		}
		if c.Function == "main.outer" {
			outerID = c.ID
		} else {
			children = append(children, c)
		}
	}
	for _, c := range children {
		if c.ParentID == nil || outerID != 0 && *c.ParentID != outerID || *c.ParentID != *children[0].ParentID {
			t.Errorf("%s call %d: parent %v, want main.outer's call (%d), as every other call's", c.Function, c.ID, c.ParentID, outerID)
			break
		}
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
	target, db, cfg, ready := daemonFiles(t)
	p := exec.Command(target, "wait", "6")
	stdin := startHeld(t, p)
	urlFile := filepath.Join(filepath.Dir(db), "ui.url")
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
// its target and store path changed, and a program started after it; a
// SIGHUP that changes the target's patterns takes effect without a
// restart.
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
	// A SIGHUP that changes the patterns takes effect without a restart:
	// the same session, main.beta no longer traced.
	c["targets"] = []map[string]any{{"exe": target, "include": []string{"main.main", "main.alpha"}}}
	if body, err = yaml.Marshal(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, body, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 2", stderr, func() bool { return generationIs(ready, "2") })
	if out, err := exec.Command(target, "4").CombinedOutput(); err != nil {
		t.Fatalf("phases: %v\n%s", err, out)
	}
	stopDaemon(t, d, stderr)
	if !strings.Contains(stderr.String(), "targets updated in place") {
		t.Errorf("the pattern change was not applied in place:\n%s", stderr.String())
	}
	s := sessionsOf(t, db)
	// main.main, 9 alpha and 9 beta; then main.main and 4 alpha.
	if len(s) != 1 || s[0].CallsRecorded != 19+5 || s[0].CallsLost != 0 || s[0].End == 0 {
		t.Errorf("sessions %+v; want one, ended, 24 calls, none lost\n%s", s, stderr.String())
	}
}
