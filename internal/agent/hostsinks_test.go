package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestTargetsSinks traces two --exe targets of two programs (procs and
// calltree) and a --cgroup target (a copy of procs run in a cgroup made by
// the test) in one agent, with the OTLP sink sending to the in-process
// receiver and /metrics served. Both programs have main.main, and both
// procs files main.tick: the function names collide.
//
//   - Every call the store holds arrived once as a span, with its parent
//     (across goroutines too), status and error text, the traces equal the
//     store's trees, and each span has the resource of its own process:
//     its program's name and path, its session, its pid. No two spans
//     share an id, and `export otlp` of the store gives the same ids and
//     resources.
//   - A scrape after the programs ran equals `query stats --binary` for
//     every program and function (calls by status, losses, histogram),
//     each program's series told apart by the binary label, never a pid.
//   - The sinks' ledgers: the OTLP sink sent every record, lost none.
func TestTargetsSinks(t *testing.T) {
	testutil.RequireRoot(t)
	procs := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	tree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	dir := t.TempDir()
	a, c := filepath.Join(dir, "a", "procs"), filepath.Join(dir, "c", "procs")
	copyFile(t, procs, a)
	copyFile(t, procs, c)
	cg := testCgroup(t)
	held := inCgroup(cg, c, "wait", "40")
	in := startReady(t, held)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rcv := otlptest.NewReceiver(t)
	db := filepath.Join(dir, "obs.db")
	targets := []Target{{Exe: a}, {Exe: tree, Exclude: []string{"main.hop*"}}, {Cgroup: cg}}
	stop := backgroundSession(t, db, func(ctx context.Context, o Options) (*Result, error) {
		return AttachTargets(ctx, targets, o)
	}, func(o *Options) {
		o.Include, o.OTLP, o.Metrics = []string{"main.*"}, liveOTLP(rcv.URL()), ln
		// Seven tracers (three targets, four reserved for the cgroup's
		// programs) with OTLP's encoders fit the default 160 MiB only
		// just; a -race test binary's larger Go base tips it over. The
		// budget is TestHostBudget's subject, not this test's.
		o.MemoryLimit = 256 << 20
	})

	runCount(t, a, 100)
	if out, err := exec.Command(tree).CombinedOutput(); err != nil || !strings.Contains(string(out), "result 419") {
		t.Fatalf("calltree: %v\n%s", err, out)
	}
	runCount(t, a, 30)
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := held.Wait(); err != nil {
		t.Fatal(err)
	}
	if out, err := inCgroup(cg, c, "count", "20").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	runCount(t, c, 50) // outside the cgroup: not traced
	fams, err := scrape(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	res := stop()
	t.Log(res.Summary())

	st, calls, sessions := otlptest.ReadStore(t, db)

	// Spans.
	got := rcv.Check(t, calls, false)
	otlptest.CheckTrees(t, calls, got, query.New(st).Tree, 6) // calltree spawns 6 goroutines under traced calls
	rcv.CheckProcesses(t, calls, sessions)
	// `export otlp` of the store gives the same spans: the same ids
	// (derived from each target's session and call ids), under the same
	// resources.
	again := otlptest.NewReceiver(t)
	if _, err := exportStore(t, st, again.URL(), filepath.Join(dir, "otlp-state")); err != nil {
		t.Fatal(err)
	}
	exported := again.Check(t, calls, false)
	again.CheckProcesses(t, calls, sessions)
	for id, sp := range got {
		e := exported[id]
		if e == nil || !bytes.Equal(e.SpanId, sp.SpanId) || !bytes.Equal(e.TraceId, sp.TraceId) || !bytes.Equal(e.ParentSpanId, sp.ParentSpanId) {
			t.Errorf("call %d: live span %x/%x (parent %x), exported %v", id, sp.TraceId, sp.SpanId, sp.ParentSpanId, e)
		}
	}
	pids, sids := map[uint32]bool{}, map[uint64]bool{}
	for _, c := range calls {
		pids[c.PID], sids[c.ID>>40] = true, true
	}
	// a twice, calltree, c twice in the cgroup.
	if len(pids) != 5 || len(sids) != 3 {
		t.Errorf("calls of %d processes in %d sessions; want 5 in 3", len(pids), len(sids))
	}
	if len(res.Sinks) != 2 || res.Sinks[1].Sink != "otlp" {
		t.Fatalf("sinks %+v, want store then otlp", res.Sinks)
	}
	if written, dropped, _ := res.Sinks[1].Totals(); written != uint64(len(calls)) || dropped != 0 {
		t.Errorf("otlp ledger: written %d, dropped %d; want %d, 0", written, dropped, len(calls))
	}
	checkTargetAccounts(t, st, res, calls)

	// /metrics, program by program.
	for _, p := range []struct {
		bin  string
		want []string
	}{{a, []string{"ok", "error"}}, {tree, []string{"ok", "error", "panic"}}, {c, []string{"ok", "error"}}} {
		byFunc := storeStats(t, db, store.Filter{Binary: &store.BinaryMatch{Paths: []string{p.bin}}})
		if len(byFunc) == 0 {
			t.Errorf("%s: query stats has no row", p.bin)
		}
		checkAgainstStats(t, ofBinary(fams, p.bin), byFunc, p.want)
	}
	ticks := map[string]uint64{}
	for _, m := range fams["obs_agent_calls_total"].GetMetric() {
		if labelValue(m, "function") == "main.tick" {
			ticks[labelValue(m, "binary")] += uint64(m.GetCounter().GetValue())
		}
	}
	if ticks[a] != 130 || ticks[c] != 60 || len(ticks) != 2 {
		t.Errorf("main.tick by binary %v; want %s 130, %s 60", ticks, a, c)
	}
	info := series(fams, "obs_agent_session_info")
	if len(info) != 3 {
		t.Errorf("session_info has %d series, want one per program (3)", len(info))
	}
	for _, m := range info {
		if b := labelValue(m, "binary"); b != a && b != tree && b != c {
			t.Errorf("session_info of binary %s", b)
		}
	}
	if g := fams["obs_agent_probe_sites"].GetMetric()[0].GetGauge().GetValue(); g != float64(res.Sites) || g == 0 {
		t.Errorf("probe_sites %g, the targets' %d", g, res.Sites)
	}
	if series(fams, "obs_agent_sink_records_total")["outcome=written,sink=otlp"] == nil {
		t.Error("no otlp sink ledger in /metrics")
	}
	noPIDLabel(t, fams)
}

// checkTargetAccounts: each target's account of each sink, in its result
// (its exit line) and in the store (session_sinks), is what that sink
// wrote of its session's calls, function by function, with no loss.
func checkTargetAccounts(t *testing.T, st *store.Store, res *Result, calls []record.Call) {
	t.Helper()
	want := map[uint64]map[string]uint64{} // session → function → calls
	for _, c := range calls {
		sid := c.ID >> 40
		if want[sid] == nil {
			want[sid] = map[string]uint64{}
		}
		want[sid][c.Function]++
	}
	ids := map[uint64]bool{}
	for _, tr := range res.Targets {
		sid := tr.Session
		if want[sid] == nil || len(tr.Sinks) != 2 {
			t.Errorf("target %s: session %d, sinks %+v; want a session with calls, two sinks", tr.Exe, sid, tr.Sinks)
			continue
		}
		ids[sid] = true
		for _, l := range tr.Sinks {
			if fmt.Sprint(l.Written) != fmt.Sprint(want[sid]) || len(l.Dropped)+len(l.ErrorsLost) != 0 {
				t.Errorf("target %s: %s sink wrote %v, lost %v; want %v, none", tr.Exe, l.Sink, l.Written, l.Dropped, want[sid])
			}
		}
		if line := fmt.Sprintf("otlp sink: sent %d records, lost 0", tr.Recorded); !strings.Contains(tr.Summary(), line) {
			t.Errorf("target %s: exit line %q does not say %q", tr.Exe, tr.Summary(), line)
		}
	}
	if len(ids) != 3 {
		t.Errorf("the targets' accounts name %d sessions, want 3", len(ids))
	}
	accts, err := st.SessionSinks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[uint64]map[string]uint64{}
	for _, a := range accts {
		if a.Dropped != 0 || a.ErrorsLost != 0 {
			t.Errorf("stored account %+v: a loss", a)
		}
		if got[a.Sink] == nil {
			got[a.Sink] = map[uint64]map[string]uint64{}
		}
		if got[a.Sink][a.Session] == nil {
			got[a.Sink][a.Session] = map[string]uint64{}
		}
		got[a.Sink][a.Session][a.Function] = a.Written
	}
	for _, sink := range []string{"store", "otlp"} {
		if fmt.Sprint(got[sink]) != fmt.Sprint(want) {
			t.Errorf("session_sinks of the %s sink %v, want %v", sink, got[sink], want)
		}
	}
}

// ofBinary is the families with only the series of binary bin (and those
// without a binary label).
func ofBinary(fams map[string]*dto.MetricFamily, bin string) map[string]*dto.MetricFamily {
	out := map[string]*dto.MetricFamily{}
	for name, f := range fams {
		g := &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}
		for _, m := range f.Metric {
			hasBinary := false
			for _, l := range m.Label {
				hasBinary = hasBinary || l.GetName() == "binary"
			}
			if !hasBinary || labelValue(m, "binary") == bin {
				g.Metric = append(g.Metric, m)
			}
		}
		out[name] = g
	}
	return out
}

// noPIDLabel: no label could carry a pid or a goroutine id.
func noPIDLabel(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				switch strings.ToLower(l.GetName()) {
				case "pid", "goid", "goroutine", "tid", "thread", "thread_id", "process_pid":
					t.Errorf("metric %s has a %s label", name, l.GetName())
				}
			}
		}
	}
}

// TestTargetsSinkLosses: with the collector down for the whole run, the
// OTLP sink of a host of two targets loses every record; each target's
// account of it (its exit line, its session_sinks rows) has exactly its
// own losses, errors apart, function by function, and they add up to the
// sink's own ledger. The store, another sink, lost nothing.
func TestTargetsSinkLosses(t *testing.T) {
	testutil.RequireRoot(t)
	procs := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a", "procs"), filepath.Join(dir, "b", "procs")
	copyFile(t, procs, a)
	copyFile(t, procs, b)
	rcv := otlptest.NewReceiver(t)
	rcv.Stop()
	db := filepath.Join(dir, "obs.db")
	stop := backgroundSession(t, db, func(ctx context.Context, o Options) (*Result, error) {
		return AttachTargets(ctx, []Target{{Exe: a}, {Exe: b}}, o)
	}, func(o *Options) {
		o.OTLP = liveOTLP(rcv.URL())
		o.OTLP.CloseTimeout = 200 * time.Millisecond
	})
	runCount(t, a, 50)
	runCount(t, b, 20)
	res := stop()
	t.Log(res.Summary())

	if len(res.Sinks) != 2 || len(res.Targets) != 2 {
		t.Fatalf("sinks %+v, targets %d", res.Sinks, len(res.Targets))
	}
	if w, d, e := res.Sinks[0].Totals(); w != 70 || d != 0 || e != 0 {
		t.Errorf("store ledger: written %d, dropped %d, errors lost %d; want 70, 0, 0", w, d, e)
	}
	if w, d, e := res.Sinks[1].Totals(); w != 0 || d != 70 || e != 7 {
		t.Errorf("otlp ledger: written %d, dropped %d, errors lost %d; want 0, 70, 7", w, d, e)
	}
	st, _, _ := otlptest.ReadStore(t, db)
	accts, err := st.SessionSinks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stored := map[uint64]store.SinkAccount{}
	for _, x := range accts {
		if x.Sink == "otlp" && x.Function == "main.tick" {
			stored[x.Session] = x
		}
	}
	for _, tr := range res.Targets {
		n := uint64(50)
		if tr.Exe == b {
			n = 20
		}
		l := tr.Sinks[1]
		if l.Sink != "otlp" || l.Written["main.tick"] != 0 || l.Dropped["main.tick"] != n || l.ErrorsLost["main.tick"] != n/10 {
			t.Errorf("target %s: otlp account %+v; want main.tick dropped %d, errors lost %d", tr.Exe, l, n, n/10)
		}
		line := fmt.Sprintf("otlp sink: sent 0 records, lost %d (ok records not sent %d, error records lost %d)", n, n-n/10, n/10)
		if !strings.Contains(tr.Summary(), line) {
			t.Errorf("target %s: exit line %q does not say %q", tr.Exe, tr.Summary(), line)
		}
		if x := stored[tr.Session]; x.Dropped != n || x.ErrorsLost != n/10 || x.Written != 0 {
			t.Errorf("target %s: stored otlp account %+v; want dropped %d, errors lost %d", tr.Exe, x, n, n/10)
		}
		if w := tr.Sinks[0].Written["main.tick"]; w != n || len(tr.Sinks[0].Dropped) != 0 {
			t.Errorf("target %s: store account %+v; want %d written, none lost", tr.Exe, tr.Sinks[0], n)
		}
	}
}
