package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestCollectorFlood: the highest rate the tracer produces here (`load
// flood`, two goroutines calling main.work back to back, 1% errors),
// traced with `run --otlp-endpoint` into a real collector on loopback that
// is up throughout. The OTLP sink loses no span: the exit line counts none
// lost, every span it counts as sent arrived once, and every call the
// store holds arrived as its span (name, goroutine, times, status and
// error text: checkSpan). The collector, which decodes every request and
// writes it out as JSON, shares the machine's two cores with the target
// and the agent.
func TestCollectorFlood(t *testing.T) {
	testutil.RequireRoot(t)
	col := collectorBinary(t)
	requireOTLPFlag(t)
	const seconds = 4
	load := testutil.BuildProgram(t, testutil.Build{Program: "load"})
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	port := freePort(t)
	out := filepath.Join(dir, "flood.json")
	c := startCollector(t, col, port, out)

	cmd := exec.Command(agentBinary(t), "run", "--otlp-endpoint", fmt.Sprintf("http://127.0.0.1:%d", port), "-f", "main.work", "--db", db, "--",
		load, "flood", "2", fmt.Sprint(seconds), "1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	cpu0 := procCPU(t, c.cmd.Process.Pid)
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v; stdout %q\n%s", err, stdout.String(), stderr.String())
	}
	took := time.Since(start)
	colCPU := procCPU(t, c.cmd.Process.Pid) - cpu0
	c.stop(t)
	var made, madeErrs int
	if _, err := fmt.Sscanf(stdout.String(), "made main.work calls=%d errors=%d", &made, &madeErrs); err != nil {
		t.Fatalf("load's output %q: %v", stdout.String(), err)
	}
	acct := parseOTLPAccount(t, stderr.String())
	spans, dups := readCollector(t, out)
	i := strings.Index(stderr.String(), "obs-agent: pid ")
	t.Logf("flood: %d calls (%.0f/s), %d errors, traced in %v; the collector received %d spans (%d twice), using %v of CPU (%.1f µs a span)\n%s",
		made, float64(made)/seconds, madeErrs, took.Round(time.Millisecond), len(spans), dups, colCPU.Round(time.Millisecond),
		float64(colCPU.Microseconds())/float64(max(len(spans), 1)), stderr.String()[max(i, 0):])
	if acct.lost != 0 || acct.errorsLost != 0 {
		t.Errorf("the OTLP sink lost %d spans (%d errors) while the collector was up", acct.lost, acct.errorsLost)
	}
	if acct.sent != len(spans) || dups != 0 {
		t.Errorf("the sink says it sent %d spans; the collector received %d (%d twice)", acct.sent, len(spans), dups)
	}
	_, calls, sess := storeCalls(t, db)
	missing, errs := 0, 0
	for _, call := range calls {
		sp, ok := spans[call.ID]
		if !ok {
			if missing++; missing <= 3 {
				t.Errorf("stored call %d (%v) did not arrive", call.ID, call.Status)
			}
			continue
		}
		if call.Status == record.StatusError {
			errs++
		}
		checkSpan(t, call, sp, spans, sess)
	}
	if missing > 0 {
		t.Errorf("%d of %d stored calls did not arrive", missing, len(calls))
	}
	if errs != madeErrs {
		t.Errorf("%d error spans of stored calls arrived; the program made %d errors", errs, madeErrs)
	}
}

// procCPU is process pid's user+system CPU so far (/proc/PID/stat).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}
