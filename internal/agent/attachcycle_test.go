package agent

import (
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// churnCaller is the function whose calls are the parents of each traced
// function of testdata/churn.
var churnCaller = map[string]string{
	"main.middle":  "main.outer",
	"main.inner":   "main.middle|main.spawned",
	"main.spawned": "main.outer",
}

// TestAttachDetachCycles attaches to a busy program and detaches again, ten
// times, while eight goroutines call the traced functions at full speed.
// Probes going in and out under load must never make a record of something
// that did not happen: every parent is a real call of the caller function,
// on the same goroutine (or the spawning call, across `go`) and enclosing
// its child in time, no call is unwound as if it were dead, and a call
// recorded as unfinished is really the last thing open on its goroutine.
func TestAttachDetachCycles(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "churn"})
	cmd := exec.Command(bin, "8")
	startReady(t, cmd)

	db := filepath.Join(t.TempDir(), "obs.db")
	var drainRets, unmatched uint64
	for i := 0; i < 10; i++ {
		opts := Options{
			Include: []string{"main.outer", "main.middle", "main.inner", "main.spawned"},
			DB:      db, SampleRate: 1, Duration: 300 * time.Millisecond, SampleInterval: -1,
		}
		res, err := Attach(context.Background(), cmd.Process.Pid, opts)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if res.Dropped != 0 {
			t.Fatalf("cycle %d: %d calls dropped; the checks below need every call", i, res.Dropped)
		}
		drainRets += res.Health.DrainRet
		unmatched += res.Health.UnmatchedRet
	}
	calls := readCalls(t, db)
	if len(calls) < 1000 {
		t.Fatalf("only %d calls recorded in ten cycles", len(calls))
	}
	checkChurn(t, calls)
	t.Logf("%d calls over 10 attach/detach cycles; returns without a seen entry: %d at attach, %d while detaching", len(calls), unmatched, drainRets)
}

// checkChurn asserts the properties of TestAttachDetachCycles.
func checkChurn(t *testing.T, calls []record.Call) {
	t.Helper()
	byID := make(map[uint64]*record.Call, len(calls))
	for i := range calls {
		byID[calls[i].ID] = &calls[i]
	}
	end := func(c *record.Call) int64 { return c.Start + c.Duration }
	bad := 0
	fail := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	// Calls per session and goroutine, in start order.
	type gkey struct{ session, goid uint64 }
	byG := map[gkey][]*record.Call{}
	for i := range calls {
		c := &calls[i]
		byG[gkey{c.ID >> 40, c.GoID}] = append(byG[gkey{c.ID >> 40, c.GoID}], c)
		switch c.Status {
		case record.StatusOK, record.StatusUnfinished:
		default:
			fail("%s id %d: status %v; churn never fails or panics", c.Function, c.ID, c.Status)
		}
		if c.ParentID == 0 {
			continue // its caller began before the probes were attached
		}
		p := byID[c.ParentID]
		if p == nil {
			fail("%s id %d: parent %d was never recorded", c.Function, c.ID, c.ParentID)
			continue
		}
		if !matchesCaller(churnCaller[c.Function], p.Function) {
			fail("%s id %d: parent is %s id %d, want %s", c.Function, c.ID, p.Function, p.ID, churnCaller[c.Function])
			continue
		}
		if c.ID>>40 != p.ID>>40 {
			fail("%s id %d: parent %d is from another session", c.Function, c.ID, p.ID)
		}
		if p.Function == "main.outer" && c.Function == "main.spawned" {
			if c.Start < p.Start {
				fail("spawned id %d starts before the outer call %d that spawned it", c.ID, p.ID)
			}
			continue
		}
		if c.GoID != p.GoID || c.Start < p.Start || (p.Status == record.StatusOK && end(c) > end(p)) {
			fail("%s id %d (goroutine %d, %d+%d) is not inside its parent %s id %d (goroutine %d, %d+%d)",
				c.Function, c.ID, c.GoID, c.Start, c.Duration, p.Function, p.ID, p.GoID, p.Start, p.Duration)
		}
	}
	// An unfinished call was open when the probes went: nothing may start
	// after it on its goroutine but its own descendants.
	descends := func(c *record.Call, anc uint64) bool {
		for c != nil && c.ParentID != 0 {
			if c.ParentID == anc {
				return true
			}
			c = byID[c.ParentID]
		}
		return false
	}
	for _, cs := range byG {
		sort.Slice(cs, func(i, j int) bool { return cs[i].Start < cs[j].Start })
		for i, u := range cs {
			if u.Status != record.StatusUnfinished {
				continue
			}
			for _, later := range cs[i+1:] {
				if later.Start > u.Start && !descends(later, u.ID) {
					fail("%s id %d recorded unfinished, but %s id %d started after it on goroutine %d and is not inside it",
						u.Function, u.ID, later.Function, later.ID, u.GoID)
					break
				}
			}
		}
	}
	if bad > 10 {
		t.Errorf("… %d violations in all", bad)
	}
}

func matchesCaller(want, got string) bool {
	for _, w := range splitBar(want) {
		if w == got {
			return true
		}
	}
	return false
}

func splitBar(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '|' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}
