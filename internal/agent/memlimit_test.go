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
	"sync"
	"testing"

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

	// The target runs outside the cgroup and waits on stdin, so the
	// agent sees every call it makes.
	target := exec.Command(load, "flood", "2", "4", "50")
	target.Env = append(os.Environ(), "LOAD_WAIT_STDIN=1")
	gate, err := target.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	tout, err := target.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer target.Process.Kill()
	touts := bufio.NewScanner(tout)
	if !touts.Scan() || touts.Text() != "waiting" {
		t.Fatalf("load did not wait: %q %v", touts.Text(), touts.Err())
	}
	pid := strconv.Itoa(target.Process.Pid)
	attachArgs := []string{"attach", "--pid", pid, "-f", "main.work", "--memory-limit", strconv.Itoa(limitMiB)}

	// The need, as a first short session against the idle target prints it.
	first, err := exec.Command(agentBin, append(attachArgs, "--db", filepath.Join(t.TempDir(), "first.db"), "--duration", "1ms")...).CombinedOutput()
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

	agent := cg.Command(append([]string{agentBin}, append(attachArgs, "--db", db, "--spill-dir", spill)...)...)
	aerr, err := agent.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer agent.Process.Kill()
	var logMu sync.Mutex
	var logBuf strings.Builder
	attached := make(chan struct{})
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(aerr)
		sc.Buffer(nil, 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			logBuf.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if strings.Contains(sc.Text(), `msg="probes attached"`) {
				once.Do(func() { close(attached) })
			}
		}
		once.Do(func() { close(attached) })
	}()
	<-attached

	// Nothing can be written from here on: fill both disks, then flood.
	filler := filepath.Join(storeFS, "filler")
	testutil.Fill(t, filler)
	spillFiller := filepath.Join(spillFS, "filler")
	testutil.Fill(t, spillFiller)
	if _, err := io.WriteString(gate, "go\n"); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(tout)
	if err := target.Wait(); err != nil {
		t.Fatalf("load: %v", err)
	}
	lo := parseLoad(t, "waiting\n"+string(rest))
	made := lo.made["main.work"]
	// The target is gone: free the journal's disk, so that the error
	// records kept in memory and the session's end can be kept there.
	if err := os.Remove(spillFiller); err != nil {
		t.Fatal(err)
	}
	werr := agent.Wait()
	<-logDone
	logMu.Lock()
	log := logBuf.String()
	logMu.Unlock()
	kills, kerr := cg.OOMKills()
	peak, _ := cg.Peak()
	hits, _ := cg.LimitHits()
	t.Logf("made %d calls, %d errors; cgroup peak %d of %d bytes (%.2f), limit reached %d times, oom kills %d",
		made.calls, made.errors, peak, need, float64(peak)/float64(need), hits, kills)
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

	if !strings.Contains(log, "it is kept in the spill directory and stored by the next run") {
		t.Errorf("the session's end was not kept for the next run:\n%s", tail(log, 20))
	}

	// The next run, with the store's disk freed.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	next, err := exec.Command(agentBin, "run", "--db", db, "--spill-dir", spill, "-f", "main.work", "--", load, "rate", "100", "0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("next run: %v\n%s", err, next)
	}
	if !strings.Contains(string(next), "stored the end of an earlier session") {
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
