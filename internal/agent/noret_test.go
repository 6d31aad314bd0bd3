package agent

import (
	"bytes"
	"context"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// noretWant is the call tree of testdata/noret, path by path, with the
// status and error text of the calls on each path.
type noretCall struct {
	n      int
	status record.Status
	errs   []string // texts of the n calls, any order; nil: none
}

func noretTree() map[string]noretCall {
	const (
		m = "main.main"
		r = m + ">main.run"
	)
	return map[string]noretCall{
		// finish ends the process in os.Exit: it and its callers are
		// still open at the end.
		m:                            {1, record.StatusUnfinished, nil},
		r:                            {1, record.StatusUnfinished, nil},
		r + ">main.finish":           {1, record.StatusUnfinished, nil},
		r + ">main.rescue":           {2, record.StatusOK, nil},
		r + ">main.rescue>main.boom": {2, record.StatusPanic, []string{"boom 1", "boom 2"}},
		// The deferred recover runs while boom is being unwound, so it is
		// boom's child.
		r + ">main.rescue>main.boom>main.rescue.func1": {2, record.StatusOK, nil},
		// serve loops forever in its own goroutine, linked to run at `go`.
		r + ">main.serve":             {1, record.StatusUnfinished, nil},
		r + ">main.serve>main.handle": {3, record.StatusOK, nil},
		r + ">main.stepper":           {1, record.StatusUnfinished, nil},
		r + ">main.stepper>main.step": {3, record.StatusOK, nil}, // two return, see below
	}
}

// TestEntryOnlyTree traces testdata/noret, whose functions boom (only
// panics), serve (loops forever) and stepper (loops until runtime.Goexit)
// have no RET instruction, and checks every call: each is traced by its
// entry alone, closed by the panic that leaves it (status panic, with the
// panic's text), by Goexit, or at the process's end (unfinished), and is
// the parent of the calls it makes.
func TestEntryOnlyTree(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range []testutil.Build{
		{Program: "noret"},
		{Program: "noret", Stripped: true},
		{Program: "noret", PIE: true},
	} {
		t.Run(b.String(), func(t *testing.T) { checkEntryOnlyTree(t, b) })
	}
}

func checkEntryOnlyTree(t *testing.T, b testutil.Build) {
	bin := testutil.BuildProgram(t, b)
	opts := testOptions(t)
	var out bytes.Buffer
	res, err := Run(context.Background(), []string{bin}, nil, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(out.String(), "result 30") {
		t.Fatalf("traced program misbehaved: exit %d, output %q", res.ExitCode, out.String())
	}
	calls := readCalls(t, opts.DB)
	checkResult(t, res, len(calls))
	want := noretTree()
	counts := map[string]int{}
	for p, w := range want {
		counts[p] = w.n
	}
	diffPaths(t, paths(t, calls), counts)

	// Statuses and texts, path by path. The third step ends its goroutine
	// with runtime.Goexit, which closes it as unfinished.
	byPath := map[string][]record.Call{}
	ps := pathsByID(t, calls)
	for _, c := range calls {
		byPath[ps[c.ID]] = append(byPath[ps[c.ID]], c)
	}
	for p, w := range want {
		var texts []string
		unfinishedSteps := 0
		for _, c := range byPath[p] {
			status := w.status
			if c.Function == "main.step" && c.Status == record.StatusUnfinished {
				unfinishedSteps++
				status = record.StatusUnfinished
			}
			if c.Status != status {
				t.Errorf("%s id %d: status %v, want %v", abbreviate(p), c.ID, c.Status, status)
			}
			if c.Error != "" {
				texts = append(texts, c.Error)
			}
		}
		if strings.HasSuffix(p, ">main.step") && unfinishedSteps != 1 {
			t.Errorf("%d steps unfinished, want exactly the one that called runtime.Goexit", unfinishedSteps)
		}
		if strings.Join(sortedCopy(texts), "|") != strings.Join(sortedCopy(w.errs), "|") {
			t.Errorf("%s: error texts %q, want %q", abbreviate(p), texts, w.errs)
		}
	}
}

// pathsByID is paths, keyed by call id.
func pathsByID(t *testing.T, calls []record.Call) map[uint64]string {
	t.Helper()
	byID := make(map[uint64]*record.Call, len(calls))
	for i := range calls {
		byID[calls[i].ID] = &calls[i]
	}
	out := map[uint64]string{}
	for i := range calls {
		p := calls[i].Function
		for c := &calls[i]; c.ParentID != 0; {
			c = byID[c.ParentID]
			if c == nil {
				t.Fatalf("call %d has a parent that is not recorded", calls[i].ID)
			}
			p = c.Function + ">" + p
		}
		out[calls[i].ID] = p
	}
	return out
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}
