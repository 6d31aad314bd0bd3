package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestMemoryLimitFloodFullDisk runs the real obs-agent in a memory cgroup
// whose hard limit is the need the agent prints, attached to a program
// that floods main.work (half of the calls fail) while the store's disk
// and the spill journal's disk are both full, so nothing can be written
// and the error lane fills to its bound. The agent must not be OOM-killed,
// and every error record it could not keep must be counted per function,
// in the exit line and the log. Then the journal's disk is freed (the
// store's stays full): the error records the agent kept in memory go to
// the journal, and the session's end to a file beside it. A next run on
// the store, with its disk freed, replays the journal and stores that end
// in the first session's row. In the end, for the first session:
// errors made == error records stored + errors lost (exit line == row)
// + error-ring drops in the kernel (also counted).
//
// It runs at the default limit and at the smallest one, where the rings
// and queues are smallest.
func TestMemoryLimitFloodFullDisk(t *testing.T) {
	for _, limit := range []int{DefaultMemoryLimit >> 20, MinMemoryLimit >> 20} {
		t.Run(fmt.Sprintf("%dMiB", limit), func(t *testing.T) {
			floodFullDisk(t, limit)
		})
	}
}

func floodFullDisk(t *testing.T, limitMiB int) {
	testutil.RequireRoot(t)
	cg := testutil.NewMemCgroup(t)
	agentBin := agentBinary(t)
	load := testutil.BuildProgram(t, testutil.Build{Program: "load"})
	storeFS := testutil.Tmpfs(t, 32<<20)
	spillFS := testutil.Tmpfs(t, 16<<20)
	db := filepath.Join(storeFS, "obs.db")
	spill := filepath.Join(spillFS, "spill")

	target := startGatedLoad(t, load, "flood", "2", "4", "50")
	attachArgs := []string{"attach", "--pid", strconv.Itoa(target.cmd.Process.Pid), "-f", "main.work", "--memory-limit", strconv.Itoa(limitMiB)}
	need := limitToNeed(t, cg, agentBin, attachArgs)

	agent := cg.Command(append([]string{agentBin}, append(attachArgs, "--db", db, "--spill-dir", spill)...)...)
	la := startLoggedAgent(t, agent)
	if la.targetPID == 0 {
		t.Fatalf("the agent never attached:\n%s", la.wait())
	}

	// Nothing can be written from here on: fill both disks, then flood.
	filler := filepath.Join(storeFS, "filler")
	testutil.Fill(t, filler)
	spillFiller := filepath.Join(spillFS, "filler")
	testutil.Fill(t, spillFiller)
	lo := target.run(t)
	made := lo.made["main.work"]
	// The target is gone: free the journal's disk, so that the error
	// records kept in memory and the session's end can be kept there.
	if err := os.Remove(spillFiller); err != nil {
		t.Fatal(err)
	}
	log := la.wait()
	werr := la.err
	kills, kerr := cg.OOMKills()
	peak, _ := cg.Peak()
	hits, _ := cg.LimitHits()
	t.Logf("made %d calls, %d errors; cgroup peak %d of %d bytes (%.2f), limit reached %d times, oom kills %d; agent RssAnon peak %.1f MiB (its budget: %s)",
		made.calls, made.errors, peak, need, float64(peak)/float64(need), hits, kills,
		float64(la.anonPeakKiB.Load())/1024, regexp.MustCompile(`agent [0-9.]+ MiB \([^)]*\)`).FindString(log))
	if kerr != nil || kills != 0 {
		t.Fatalf("the agent was OOM-killed under its own printed need (%d kills, %v); exit %v; log:\n%s", kills, kerr, werr, tail(log, 40))
	}
	if werr == nil || !strings.Contains(log, "error records are waiting in the spill journal") {
		t.Fatalf("obs-agent: %v, want a failure that says error records wait in the journal; log:\n%s", werr, tail(log, 40))
	}

	line := exitSection(log)
	lostM := regexp.MustCompile(`ERROR RECORDS LOST: (\d+) error records.*: main\.work (\d+)`).FindStringSubmatch(line)
	if lostM == nil {
		t.Fatalf("the exit line does not report errors lost per function:\n%s\nlog:\n%s", line, tail(log, 40))
	}
	lost, _ := strconv.ParseUint(lostM[1], 10, 64)
	lostFn, _ := strconv.ParseUint(lostM[2], 10, 64)
	var ringErr uint64
	if rm := regexp.MustCompile(`error ring full (\d+)`).FindStringSubmatch(line); rm != nil {
		ringErr, _ = strconv.ParseUint(rm[1], 10, 64)
	}
	if lost == 0 || lostFn != lost {
		t.Errorf("exit line: %d errors lost, %d for main.work; want all of a non-zero loss on main.work", lost, lostFn)
	}
	if n := strings.Count(log, `msg="error records are being lost`); n != 1 {
		t.Errorf("the loss is logged %d times when it starts, want 1", n)
	}
	if !strings.Contains(log, fmt.Sprintf(`msg="error records lost: they could not be kept in the store, the spill journal or memory" component=agent function=main.work count=%d`, lost)) {
		t.Errorf("no per-function loss line in the log")
	}

	// A full disk may still take the one-row update that ends the
	// session; if it did not, the end must have been kept for the next run.
	kept := strings.Contains(log, "it is kept in the spill directory and stored by the next run")
	if !kept && strings.Contains(log, "cannot store the session's end") {
		t.Errorf("the session's end was neither stored nor kept:\n%s", tail(log, 20))
	}

	// The next run, with the store's disk freed.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	next, err := exec.Command(agentBin, "run", "--db", db, "--spill-dir", spill, "-f", "main.work", "--", load, "rate", "100", "0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("next run: %v\n%s", err, next)
	}
	if kept && !strings.Contains(string(next), "stored the end of an earlier session") {
		t.Errorf("the next run did not store the kept session end:\n%s", next)
	}

	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	calls, err := st.Calls(ctx, store.Filter{Func: "main.work", Status: []record.Status{record.StatusError}})
	if err != nil {
		t.Fatal(err)
	}
	var stored uint64
	for i := range calls {
		if calls[i].ID>>40 == 1 {
			stored++
		}
	}
	t.Logf("errors: made %d = stored %d + lost %d + error ring full %d ?", made.errors, stored, lost, ringErr)
	if made.errors != stored+lost+ringErr {
		t.Errorf("errors made %d != stored %d + counted lost %d + kernel error-ring drops %d", made.errors, stored, lost, ringErr)
	}
	ss, err := st.Sessions(ctx)
	if err != nil || len(ss) != 2 {
		t.Fatalf("sessions %+v, %v", ss, err)
	}
	if got := ss[0].ErrorsLost["main.work"]; got != lost || ss[0].End == 0 || ss[0].ExitReason != "target exited" {
		t.Errorf("session row: errors lost %v, end %d, reason %q; want main.work %d, an end, target exited", ss[0].ErrorsLost, ss[0].End, ss[0].ExitReason, lost)
	}
}

// TestMemoryLimitGoroutineMapFull fills the goroutine map to its capacity
// under the smallest limit: main.burst, traced, starts 40,000 goroutines,
// and each gets traced state when it is created, so the map is full and
// its kernel memory at its maximum. The agent, in a cgroup limited to its
// printed need, must not be OOM-killed, and the calls the full map kept
// out must show in the exit line.
func TestMemoryLimitGoroutineMapFull(t *testing.T) {
	testutil.RequireRoot(t)
	cg := testutil.NewMemCgroup(t)
	agentBin := agentBinary(t)
	load := testutil.BuildProgram(t, testutil.Build{Program: "load"})
	target := startGatedLoad(t, load, "burst", "40000", "10")
	args := []string{"attach", "--pid", strconv.Itoa(target.cmd.Process.Pid), "-f", "main.work", "-f", "main.burst",
		"--memory-limit", strconv.Itoa(MinMemoryLimit >> 20), "--db", filepath.Join(t.TempDir(), "obs.db")}
	need := limitToNeed(t, cg, agentBin, args)
	la := startLoggedAgent(t, cg.Command(append([]string{agentBin}, args...)...))
	if la.targetPID == 0 {
		t.Fatalf("the agent never attached:\n%s", la.wait())
	}
	lo := target.run(t)
	log := la.wait()
	kills, kerr := cg.OOMKills()
	peak, _ := cg.Peak()
	t.Logf("made %d calls; cgroup peak %d of %d bytes (%.2f), oom kills %d", lo.made["main.work"].calls, peak, need, float64(peak)/float64(need), kills)
	if kerr != nil || kills != 0 {
		t.Fatalf("the agent was OOM-killed under its own printed need (%d kills, %v); log:\n%s", kills, kerr, tail(log, 30))
	}
	if la.err != nil {
		t.Fatalf("obs-agent: %v\n%s", la.err, tail(log, 30))
	}
	m := regexp.MustCompile(`goroutine/frame map full (\d+)`).FindStringSubmatch(exitSection(log))
	if m == nil || m[1] == "0" {
		t.Fatalf("the exit line does not show the full goroutine map:\n%s", exitSection(log))
	}
	t.Logf("exit line:\n%s", exitSection(log))
}

// gatedLoad is testdata/load started outside any test cgroup, waiting on
// its stdin before it begins, so an agent attached meanwhile sees every
// call.
type gatedLoad struct {
	cmd  *exec.Cmd
	gate io.WriteCloser
	out  io.Reader
}

func startGatedLoad(t *testing.T, load string, args ...string) *gatedLoad {
	t.Helper()
	cmd := exec.Command(load, args...)
	cmd.Env = append(os.Environ(), "LOAD_WAIT_STDIN=1")
	gate, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	br := bufio.NewReader(out)
	if line, err := br.ReadString('\n'); line != "waiting\n" {
		t.Fatalf("load did not wait: %q %v", line, err)
	}
	return &gatedLoad{cmd: cmd, gate: gate, out: br}
}

// run opens the gate and returns what the program says it made.
func (g *gatedLoad) run(t *testing.T) loadOutput {
	t.Helper()
	if _, err := io.WriteString(g.gate, "go\n"); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(g.out)
	if err := g.cmd.Wait(); err != nil {
		t.Fatalf("load: %v", err)
	}
	return parseLoad(t, string(rest))
}

// limitToNeed runs a first short session with args (an attach to an idle
// target) to learn the need the agent prints, and sets the cgroup's hard
// limit to it.
func limitToNeed(t *testing.T, cg *testutil.MemCgroup, agentBin string, args []string) int64 {
	t.Helper()
	var a []string
	for i := 0; i < len(args); i++ { // a store of its own
		if args[i] == "--db" {
			i++
			continue
		}
		a = append(a, args[i])
	}
	first, err := exec.Command(agentBin, append(a, "--db", filepath.Join(t.TempDir(), "first.db"), "--duration", "1ms")...).CombinedOutput()
	if err != nil {
		t.Fatalf("first session: %v\n%s", err, first)
	}
	m := regexp.MustCompile(`need_bytes=(\d+)`).FindSubmatch(first)
	if m == nil {
		t.Fatalf("no need_bytes in the first session's output:\n%s", first)
	}
	need, _ := strconv.ParseInt(string(m[1]), 10, 64)
	if err := cg.SetLimit(need); err != nil {
		t.Fatal(err)
	}
	t.Logf("cgroup %s (v2 %v): hard limit %d bytes, the need printed by a first session", cg.Dir, cg.V2(), need)
	return need
}

// loggedAgent is an obs-agent process whose stderr is collected.
type loggedAgent struct {
	cmd       *exec.Cmd
	targetPID int // from the "probes attached" line; 0 if it never came
	done      chan struct{}
	log       strings.Builder // complete once done is closed
	err       error           // the process's exit, once wait returned
	// anonPeakKiB is the largest RssAnon (heap, stacks, SQLite's memory)
	// polled every 20 ms while the agent ran: a measurement only.
	anonPeakKiB atomic.Int64
}

// startLoggedAgent starts cmd and returns once the agent has attached (or
// ended without attaching); its stderr keeps being collected.
func startLoggedAgent(t *testing.T, cmd *exec.Cmd) *loggedAgent {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	la := &loggedAgent{cmd: cmd, done: make(chan struct{})}
	attached := make(chan int, 1)
	go func() {
		defer close(la.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		pid := 0
		for sc.Scan() {
			la.log.WriteString(sc.Text() + "\n")
			if _, rest, ok := strings.Cut(sc.Text(), `msg="probes attached" component=agent pid=`); ok && pid == 0 {
				pid, _ = strconv.Atoi(strings.Fields(rest)[0])
				attached <- pid
			}
		}
		if pid == 0 {
			attached <- 0
		}
	}()
	la.targetPID = <-attached
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-la.done:
				return
			case <-tick.C:
				if ps, ok := pollProc(cmd.Process.Pid); ok && ps.anonKiB > la.anonPeakKiB.Load() {
					la.anonPeakKiB.Store(ps.anonKiB)
				}
			}
		}
	}()
	return la
}

// wait waits for the agent to exit and returns its whole stderr.
func (la *loggedAgent) wait() string {
	<-la.done
	la.err = la.cmd.Wait()
	return la.log.String()
}

// exitSection is the exit line and the lines indented under it.
func exitSection(log string) string {
	i := strings.LastIndex(log, "obs-agent: pid ")
	if i < 0 {
		return ""
	}
	return log[i:]
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
