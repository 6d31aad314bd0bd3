package otlp

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestExportTracedCalltree traces the bundled calltree program for real,
// exports its store, and checks what arrived against the store: every
// call once as a span with its name, goroutine, parent (across
// goroutines too), trace, status and error text; one trace per root
// whose spans are exactly the store's tree under that root; the process
// as the resource.
func TestExportTracedCalltree(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	db := filepath.Join(t.TempDir(), "obs.db")
	var out bytes.Buffer
	res, err := agent.Run(context.Background(), []string{bin}, nil, &out, io.Discard,
		agent.Options{Include: []string{"main.*"}, Exclude: []string{"main.hop*"}, DB: db, SampleRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(out.String(), "result 419") {
		t.Fatalf("traced program misbehaved: exit %d, output %q", res.ExitCode, out.String())
	}
	s := openRO(t, db)
	ctx := context.Background()
	calls, err := s.Calls(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 200 {
		t.Fatalf("store holds %d calls; the tree has more", len(calls))
	}
	var errs, panics int
	for _, c := range calls {
		switch c.Status {
		case record.StatusError:
			errs++
		case record.StatusPanic:
			panics++
		}
	}
	if errs == 0 || panics == 0 {
		t.Fatalf("the tree should hold an error and a panic: %d errors, %d panics", errs, panics)
	}

	rcv := newReceiver(t)
	rep, err := runExport(t, s, testExporter(t, rcv.url()), db+".otlp-state", 32, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Spans != int64(len(calls)) {
		t.Errorf("exported %d spans for %d calls", rep.Spans, len(calls))
	}
	got := checkSpans(t, rcv, calls)

	// Parents on another goroutine: spawn's and relay's workers.
	cross := 0
	for _, c := range calls {
		if p, ok := got[c.ParentID]; ok && attr(p.Attributes, AttrThreadID).GetIntValue() != int64(c.GoID) {
			cross++
		}
	}
	if cross < 6 {
		t.Errorf("%d spans have a parent on another goroutine; calltree spawns 6", cross)
	}

	// Each trace is exactly the store's tree under its root.
	q := query.New(s)
	traces := map[string]map[uint64]bool{}
	for id, sp := range got {
		k := hex.EncodeToString(sp.TraceId)
		if traces[k] == nil {
			traces[k] = map[uint64]bool{}
		}
		traces[k][id] = true
	}
	roots := 0
	for _, c := range calls {
		if c.ParentID != 0 {
			continue
		}
		roots++
		tree, err := q.Tree(ctx, c.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		tr := traces[hex.EncodeToString(got[c.ID].TraceId)]
		if len(tr) != len(tree.Calls) {
			t.Errorf("root %d (%s): trace has %d spans, the store's tree %d calls", c.ID, c.Function, len(tr), len(tree.Calls))
		}
		for _, tc := range tree.Calls {
			if !tr[tc.ID] {
				t.Errorf("call %d (%s) of root %d's tree is not in its trace", tc.ID, tc.Function, c.ID)
			}
		}
	}
	if roots != len(traces) {
		t.Errorf("%d roots, %d traces", roots, len(traces))
	}

	sessions, err := s.Sessions(ctx)
	if err != nil || len(sessions) != 1 {
		t.Fatalf("sessions %+v, %v", sessions, err)
	}
	_, resources, _ := rcv.snapshot()
	for k, r := range resources {
		if attr(r.Attributes, AttrServiceName).GetStringValue() != filepath.Base(bin) ||
			attr(r.Attributes, AttrProcessPID).GetIntValue() != int64(res.PID) ||
			attr(r.Attributes, AttrExecutableName).GetStringValue() != filepath.Base(bin) {
			t.Fatalf("span %s: resource %v; want service and executable %s, pid %d", k, r, filepath.Base(bin), res.PID)
		}
	}
}
