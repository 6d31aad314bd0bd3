package otlp

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// Sender sends one export request; *Exporter is one.
type Sender interface {
	Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (Result, error)
}

// StoreExport sends the calls a store holds whose start is in
// [Since, Until) as spans, hour by hour, BatchSize spans per request,
// recording its progress in the state file after every accepted request.
type StoreExport struct {
	Store       *store.Store
	Sender      Sender
	Since       time.Time // zero: all time
	Until       time.Time // zero: no end
	StatePath   string
	BatchSize   int    // spans per request
	ServiceName string // "" = each session's binary name
	Version     string // the scope's version
	Log         *slog.Logger
}

// Report sums up one export.
type Report struct {
	Spans    int64 // spans accepted by the receiver
	Requests int   // requests accepted
	Rejected int64 // spans the receiver accepted a request for but dropped (partial success)
	Hours    int   // hours looked at
}

// maxChain bounds the walk to a call's root (a guard against a corrupt
// parent cycle).
const maxChain = 10000

// maxRoots bounds the memo of calls' roots; it is cleared when full.
const maxRoots = 1 << 20

// Run exports. On error the state file holds the progress up to the last
// accepted request, so running again sends the rest, and nothing twice.
func (x *StoreExport) Run(ctx context.Context) (Report, error) {
	var rep Report
	if x.BatchSize <= 0 {
		return rep, fmt.Errorf("otlp export: batch size %d: want 1 or more", x.BatchSize)
	}
	log := x.Log
	if log == nil {
		log = slog.Default().With("component", "otlp")
	}
	st, err := LoadState(x.StatePath)
	if err != nil {
		return rep, err
	}
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !x.Since.IsZero() {
		lo = x.Since.UnixNano()
	}
	if !x.Until.IsZero() {
		hi = x.Until.UnixNano()
	}
	if len(st.Hours) == 0 {
		st.Since = lo
	} else if lo < st.Since {
		return rep, fmt.Errorf("--since %s is earlier than the %s of the export recorded in %s: calls in between "+
			"would be skipped; pass a new --state file (or remove it) to export that range",
			time.Unix(0, lo).UTC().Format(time.RFC3339), sinceText(st.Since), x.StatePath)
	}
	sessions, err := x.Store.Sessions(ctx)
	if err != nil {
		return rep, err
	}
	procs := map[uint64]*Process{}
	for _, s := range sessions {
		p := ProcessOf(s, x.ServiceName)
		procs[s.ID] = &p
	}
	hours, err := x.Store.Hours(ctx)
	if err != nil {
		return rep, err
	}
	e := exporter{x: x, st: st, rep: &rep, procs: procs, inProc: map[procKey]*Process{}, roots: map[uint64]uint64{}, batch: NewBatch(x.Version), log: log}
	for _, h := range hours {
		hs, he := h.UnixNano(), h.Add(time.Hour).UnixNano()
		if he <= lo || hs >= hi {
			continue
		}
		rep.Hours++
		if err := e.hour(ctx, hs, max(lo, hs), min(hi, he)); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func sinceText(ns int64) string {
	if ns == math.MinInt64 {
		return "all time (--since 0)"
	}
	return "--since " + time.Unix(0, ns).UTC().Format(time.RFC3339)
}

type exporter struct {
	x     *StoreExport
	st    *State
	rep   *Report
	procs map[uint64]*Process
	// inProc are the Processes of the processes of file sessions.
	inProc map[procKey]*Process
	roots  map[uint64]uint64 // call id -> root id, for calls seen
	batch  *Batch
	log    *slog.Logger
}

// hour exports the calls of hour h whose start is in [lo, hi), after the
// hour's cursor.
func (e *exporter) hour(ctx context.Context, h, lo, hi int64) error {
	key := hourKey(h)
	cur, seen := e.st.Hours[key]
	if !seen {
		cur = Cursor{Start: lo - 1, ID: math.MaxUint64}
	}
	limit := e.x.BatchSize
	for {
		from := max(lo, cur.Start)
		calls, err := e.x.Store.Calls(ctx, store.Filter{Since: time.Unix(0, from), Until: time.Unix(0, hi), Limit: limit})
		if err != nil {
			return err
		}
		fresh := calls[:0:0]
		for _, c := range calls {
			if cur.after(c.Start, c.ID) {
				fresh = append(fresh, c)
			}
		}
		if len(fresh) == 0 && len(calls) == limit {
			// A page of calls sharing the cursor's start, all sent:
			// read a larger page to get past them.
			limit *= 2
			continue
		}
		last := len(calls) < limit
		limit = e.x.BatchSize
		if err := e.send(ctx, fresh, key, &cur); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}

// send exports calls (in the hour's order) in requests of BatchSize,
// saving the cursor after each.
func (e *exporter) send(ctx context.Context, calls []record.Call, key string, cur *Cursor) error {
	for len(calls) > 0 {
		n := min(len(calls), e.x.BatchSize)
		chunk := calls[:n]
		calls = calls[n:]
		if err := e.resolveRoots(ctx, chunk); err != nil {
			return err
		}
		e.batch.Reset()
		for i := range chunk {
			c := &chunk[i]
			e.batch.Add(e.process(c), c, e.roots[c.ID])
		}
		res, err := e.x.Sender.Export(ctx, e.batch.Request())
		if err != nil {
			return err
		}
		if res.Rejected > 0 {
			e.log.Warn("receiver dropped spans", "rejected", res.Rejected, "message", res.Message)
		}
		e.rep.Requests++
		e.rep.Spans += int64(n)
		e.rep.Rejected += res.Rejected
		last := chunk[n-1]
		*cur = Cursor{Start: last.Start, ID: last.ID}
		e.st.Hours[key] = *cur
		if err := e.st.Save(e.x.StatePath); err != nil {
			return err
		}
	}
	return nil
}

// process is the Process of a call's session, in the call's process for
// a session of every process of a file; a session the store no longer
// lists gets one from the call alone.
func (e *exporter) process(c *record.Call) *Process {
	s := SessionOf(c.ID)
	p, ok := e.procs[s]
	if !ok {
		q := ProcessOf(record.Session{ID: s, PID: c.PID}, e.x.ServiceName)
		p = &q
		e.procs[s] = p
	}
	if p.PID != 0 || c.PID == 0 {
		return p
	}
	k := procKey{s, c.PID}
	if q, ok := e.inProc[k]; ok {
		return q
	}
	if len(e.inProc) >= maxInProc {
		clear(e.inProc) // a batch's Processes are copied into it
	}
	q := p.InProcess(c.PID)
	e.inProc[k] = &q
	return &q
}

// maxInProc bounds the memo of the processes of file sessions.
const maxInProc = 1 << 12

// resolveRoots finds the root of each call: the topmost ancestor the store
// holds (the call itself when it has no parent). Ancestors are read in
// one batched walk for the calls whose parent's root is not yet known.
func (e *exporter) resolveRoots(ctx context.Context, calls []record.Call) error {
	if len(e.roots) > maxRoots {
		clear(e.roots)
	}
	var need []record.Call
	for i := range calls {
		c := &calls[i]
		if c.ParentID == 0 {
			e.roots[c.ID] = c.ID
		} else if r, ok := e.roots[c.ParentID]; ok {
			e.roots[c.ID] = r
		} else {
			need = append(need, *c)
		}
	}
	if len(need) == 0 {
		return nil
	}
	known, err := e.x.Store.Ancestry(ctx, need, maxChain)
	if err != nil {
		return err
	}
	for i := range need {
		c := &need[i]
		top, parent := c.ID, c.ParentID
		for n := 0; parent != 0 && n < maxChain; n++ {
			if r, ok := e.roots[parent]; ok {
				top = r
				break
			}
			p, ok := known[parent]
			if !ok {
				break // the parent is not stored: this chain's top is its root
			}
			top, parent = p.ID, p.ParentID
		}
		e.roots[c.ID] = top
	}
	return nil
}
