package agent

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// floodSecs is how long TestLiveOTLPFlood's flood runs.
const floodSecs = 4

// TestLiveOTLPFlood: the highest rate the tracer produces here, two
// goroutines calling main.work back to back (1% errors), traced by the
// real obs-agent binary with the OTLP sink sending to a receiver that is
// up throughout (a lean one: see otlptest.NewLeanReceiver). No error
// span is lost; every span the sink counts as sent arrived once; it
// accounts for every record the decoder produced (what the store sink was
// handed too, written or shed) as sent or shed; every error the program
// made arrived as a span, and every call the store holds arrived as a span
// of the same function unless it is one of the ok records the sink shed.
// Issue 11 asks that no ok span be shed either at this rate: on the 2-core
// test machine the agent's CPU cost does not allow it yet (the agent sheds
// in the store sink too), so the ok spans shed are logged as a figure, not
// asserted (docs/performance.md).
func TestLiveOTLPFlood(t *testing.T) {
	testutil.RequireRoot(t)
	rcv := otlptest.NewLeanReceiver(t)
	agentBinary(t)
	testutil.BuildProgram(t, testutil.Build{Program: "load"})
	// The receiver is this process: its CPU over the run is what
	// receiving the spans cost, beside the agent's own.
	self0 := selfCPU(t)
	c := runAgentBinary(t, []string{"-f", "main.work", "--otlp-endpoint", rcv.URL()}, floodSecs*time.Second,
		"flood", "2", fmt.Sprint(floodSecs), "1")
	rcvCPU := selfCPU(t) - self0
	m := c.Target.made["main.work"]
	t.Logf("flood: %d calls (%.0f/s), %d errors; receiver (this process) CPU %v; %s\n%s", m.calls, float64(m.calls)/floodSecs, m.errors,
		rcvCPU.Round(time.Millisecond), c, exitReport(c.Stderr))
	if m.calls == 0 || m.errors == 0 {
		t.Fatalf("the program made %d calls, %d errors", m.calls, m.errors)
	}
	if c.Recorded+c.Lost != m.calls {
		t.Errorf("made %d calls; the agent recorded %d and lost %d", m.calls, c.Recorded, c.Lost)
	}
	sent, lost, errLost := otlpAccount(t, c.Stderr)
	// What starved it, for the report: the store sink sheds on the same
	// records when the agent as a whole lacks CPU.
	t.Logf("the OTLP sink shed %d ok spans (%.1f%%) while the receiver was up; meanwhile the store sink shed %d of the same records, and the agent's threads waited %v for a CPU",
		lost-errLost, 100*float64(lost-errLost)/float64(max(m.calls, 1)), c.Lost-kernelDrops(t, c.Stderr), c.RunDelay.Round(time.Millisecond))
	if errLost != 0 {
		t.Errorf("the OTLP sink lost %d error spans while the receiver was up", errLost)
	}
	// Every record decoded went to both sinks: the calls made, less the
	// records the kernel could not hand over.
	if decoded := m.calls - kernelDrops(t, c.Stderr); sent+lost != decoded {
		t.Errorf("the OTLP sink accounts for %d records (sent %d, lost %d); %d were decoded", sent+lost, sent, lost, decoded)
	}
	spans, dups := rcv.Lean()
	if uint64(len(spans)) != sent || dups != 0 {
		t.Errorf("the receiver holds %d spans (%d arrived twice); the sink says it sent %d", len(spans), dups, sent)
	}
	byCall := map[uint64]otlptest.LeanSpan{}
	var errSpans uint64
	for _, sp := range spans {
		byCall[sp.CallID] = sp
		if sp.Error {
			errSpans++
		}
	}
	if errSpans != m.errors {
		t.Errorf("%d error spans arrived; the program made %d errors", errSpans, m.errors)
	}
	calls := readCalls(t, c.DB)
	if uint64(len(calls)) != c.Recorded {
		t.Errorf("the store holds %d calls, the exit line says %d recorded", len(calls), c.Recorded)
	}
	var missing, wrong uint64
	for i := range calls {
		sp, ok := byCall[calls[i].ID]
		switch {
		case !ok && !calls[i].IsError():
			missing++ // an ok record the sink may have shed
		case !ok || sp.Name != calls[i].Function || sp.Error != calls[i].IsError():
			if wrong++; wrong <= 3 {
				t.Errorf("stored call %d (%s, %v) arrived as %+v (%v)", calls[i].ID, calls[i].Function, calls[i].Status, sp, ok)
			}
		}
	}
	if wrong > 0 || missing > lost-errLost {
		t.Errorf("of the %d stored calls, %d arrived wrong or not at all (errors), and %d ok ones did not arrive while the sink shed only %d", len(calls), wrong, missing, lost-errLost)
	}
}

// exitReport is the exit line and the lines under it.
func exitReport(stderr string) string {
	i := strings.Index(stderr, "obs-agent: pid ")
	if i < 0 {
		return ""
	}
	return stderr[i:]
}

var (
	otlpAccountLine = regexp.MustCompile(`otlp sink: sent (\d+) records, lost (\d+) \(ok records not sent \d+, error records lost (\d+)\)`)
	kernelSideLine  = regexp.MustCompile(`kernel side: ok ring full (\d+), error ring full (\d+), goroutine/frame map full (\d+), unreadable goroutine (\d+)`)
)

func atou(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }

// otlpAccount reads the OTLP sink's line of the exit report.
func otlpAccount(t *testing.T, stderr string) (sent, lost, errLost uint64) {
	t.Helper()
	m := otlpAccountLine.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no OTLP sink line in the exit report:\n%s", exitReport(stderr))
	}
	return atou(m[1]), atou(m[2]), atou(m[3])
}

// kernelDrops is the records the kernel side dropped (the exit report's
// line, when there is one).
func kernelDrops(tb testing.TB, stderr string) uint64 {
	m := kernelSideLine.FindStringSubmatch(stderr)
	if m == nil {
		return 0
	}
	return atou(m[1]) + atou(m[2]) + atou(m[3]) + atou(m[4])
}

// selfCPU is this process's user+system CPU so far.
func selfCPU(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
