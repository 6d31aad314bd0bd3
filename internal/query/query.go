// Package query is obs-agent's read layer: it answers the questions users
// ask of a store (calls, one call and its ancestors, a call tree, errors
// with their parent chains, statistics grouped by function, package or
// module, resources, gaps, partitions, sessions, processes) for the CLI
// and for any other front end alike. It composes the SQL primitives of internal/store
// (which picks indexes and side tables per hour) and returns plain values
// from internal/result; rendering them is internal/render's job.
package query

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/obs-agent/obs-agent/internal/glob"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/store"
)

// Filter selects records; see store.Filter.
type Filter = store.Filter

// maxChain bounds an ancestor chain (a guard against a corrupt parent
// cycle).
const maxChain = 10000

// Layer answers queries over one store.
type Layer struct {
	s *store.Store
}

// New returns the layer over an open store.
func New(s *store.Store) *Layer { return &Layer{s: s} }

// Open opens the store at path read-only: a missing file is an error,
// never created.
func Open(path string) (*Layer, error) {
	s, err := store.Open(path, store.Options{ReadOnly: true})
	if errors.Is(err, store.ErrNoStore) {
		return nil, fmt.Errorf("no store at %s; run `obs-agent attach` first or pass --db", path)
	}
	if err != nil {
		return nil, err
	}
	return New(s), nil
}

// Close closes the store.
func (q *Layer) Close() error { return q.s.Close() }

// Path is the store's file.
func (q *Layer) Path() string { return q.s.Path() }

// Calls returns the calls matching f, oldest first.
func (q *Layer) Calls(ctx context.Context, f Filter) ([]record.Call, error) {
	return q.s.Calls(ctx, f)
}

// Call returns one call, or an error matching store.ErrNotFound.
func (q *Layer) Call(ctx context.Context, id uint64) (record.Call, error) {
	return q.s.Call(ctx, id)
}

// Ancestors returns the chain of parents of call id, root first, ending
// with the call itself. A parent missing from the store (expired, or lost)
// ends the chain there.
func (q *Layer) Ancestors(ctx context.Context, id uint64) ([]record.Call, error) {
	c, err := q.s.Call(ctx, id)
	if err != nil {
		return nil, err
	}
	known, err := q.parents(ctx, []record.Call{c})
	if err != nil {
		return nil, err
	}
	return append(chainOf(c.ParentID, known), c), nil
}

// parents loads every stored ancestor of calls, a tree level per batch
// for all of them at once.
func (q *Layer) parents(ctx context.Context, calls []record.Call) (map[uint64]record.Call, error) {
	return q.s.Ancestry(ctx, calls, maxChain)
}

// chainOf is the chain ending with call id, root first, from the loaded
// ancestors; nil when id is 0 or not loaded.
func chainOf(id uint64, known map[uint64]record.Call) []record.Call {
	var chain []record.Call
	for id != 0 && len(chain) < maxChain {
		c, ok := known[id]
		if !ok {
			break
		}
		chain = append(chain, c)
		id = c.ParentID
	}
	slices.Reverse(chain)
	return chain
}

// Errors returns the error-lane calls matching f (error, panic and
// unfinished unless f.Status says otherwise), newest first, each with the
// chain of its parents.
func (q *Layer) Errors(ctx context.Context, f Filter) ([]result.ErrorChain, error) {
	calls, err := q.s.Errors(ctx, f)
	if err != nil {
		return nil, err
	}
	known, err := q.parents(ctx, calls)
	if err != nil {
		return nil, err
	}
	out := make([]result.ErrorChain, len(calls))
	for i, c := range calls {
		out[i] = result.ErrorChain{Call: c, Chain: chainOf(c.ParentID, known)}
	}
	return out, nil
}

// Tree returns call id and its descendants, including calls on goroutines
// it started, in depth-first pre-order with children oldest first. At most
// limit calls (0 = all), taken breadth first. A missing call is an error
// matching store.ErrNotFound.
func (q *Layer) Tree(ctx context.Context, id uint64, limit int) (result.Tree, error) {
	var t result.Tree
	root, err := q.s.Call(ctx, id)
	if err != nil {
		return t, err
	}
	ids, truncated, err := q.s.Descendants(ctx, root, limit)
	if err != nil {
		return t, err
	}
	byID, err := q.s.CallsByID(ctx, ids[1:])
	if err != nil {
		return t, err
	}
	byID[id] = root
	kids := map[uint64][]uint64{}
	for _, cid := range ids[1:] {
		if c, ok := byID[cid]; ok {
			kids[c.ParentID] = append(kids[c.ParentID], cid)
		}
	}
	var walk func(uint64, int)
	walk = func(n uint64, d int) {
		t.Calls = append(t.Calls, byID[n])
		t.Depth = append(t.Depth, d)
		ks := kids[n]
		slices.SortFunc(ks, func(a, b uint64) int {
			return cmp.Or(cmp.Compare(byID[a].Start, byID[b].Start), cmp.Compare(a, b))
		})
		for _, k := range ks {
			walk(k, d+1)
		}
	}
	walk(id, 0)
	t.Truncated = truncated
	return t, nil
}

// Stats merges the per-function aggregates whose interval starts in
// [f.Since, f.Until), grouped by by, sorted by calls (most first, then by
// key); f.Limit keeps the top rows. Each row counts the probe gaps of its
// functions overlapping the range; gaps lists them all, oldest first.
// f.Status and f.MinDuration don't apply.
func (q *Layer) Stats(ctx context.Context, f Filter, by result.Grouping) (rows []result.StatsRow, gaps []record.Gap, err error) {
	per, err := q.s.Stats(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	groups := map[string]*result.StatsRow{}
	get := func(k string) *result.StatsRow {
		g := groups[k]
		if g == nil {
			g = &result.StatsRow{Key: k}
			groups[k] = g
		}
		return g
	}
	for i := range per {
		g := get(by.Key(per[i].Function))
		g.Add(&per[i].FuncStats)
	}
	gf := f
	gf.Limit = 0
	if gaps, err = q.s.Gaps(ctx, gf); err != nil {
		return nil, nil, err
	}
	if len(gaps) > 0 {
		funcs, err := q.s.FunctionInfo(ctx)
		if err != nil {
			return nil, nil, err
		}
		lo, hi := f.Bounds()
		for _, gp := range gaps {
			fi, ok := funcs[gp.Function]
			if !ok {
				fi = record.Function{Name: gp.Function}
			}
			g := get(by.Key(fi))
			g.Gaps++
			end := gp.End
			if end == 0 || end > hi {
				end = min(hi, time.Now().UnixNano())
			}
			g.GapTime += time.Duration(max(0, end-max(gp.Start, lo)))
		}
	}
	if err := q.addSinks(ctx, f, by, get); err != nil {
		return nil, nil, err
	}
	rows = make([]result.StatsRow, 0, len(groups))
	for _, g := range groups {
		g.Finish()
		// The merged interval and pid describe no one row: clear them.
		g.PID, g.IntervalStart, g.IntervalEnd = 0, 0, 0
		rows = append(rows, *g)
	}
	slices.SortFunc(rows, func(a, b result.StatsRow) int {
		return cmp.Or(cmp.Compare(b.Calls, a.Calls), strings.Compare(a.Key, b.Key))
	})
	if f.Limit > 0 && len(rows) > f.Limit {
		rows = rows[:f.Limit]
	}
	return rows, gaps, nil
}

// addSinks adds to each row the sinks' accounts of its functions (f.Func
// applies) from the sessions that overlap [f.Since, f.Until) (of f.PID).
// A sink's account is kept once per session, when it ends, so a session
// counts whole, and a running one not yet.
func (q *Layer) addSinks(ctx context.Context, f Filter, by result.Grouping, get func(string) *result.StatsRow) error {
	sessions, err := q.s.Sessions(ctx)
	if err != nil {
		return err
	}
	lo, hi := f.Bounds()
	var ids []uint64
	for _, ss := range sessions {
		if ss.Start < hi && (ss.End == 0 || ss.End >= lo) && (f.PID == 0 || ss.PID == f.PID) {
			ids = append(ids, ss.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	accts, err := q.s.SessionSinks(ctx, ids...)
	if err != nil || len(accts) == 0 {
		return err
	}
	funcs, err := q.s.FunctionInfo(ctx)
	if err != nil {
		return err
	}
	var match *glob.Glob
	if f.Func != "" {
		g := glob.Compile(f.Func)
		match = &g
	}
	for _, a := range accts {
		if match != nil && !match.Match(a.Function) {
			continue
		}
		fi, ok := funcs[a.Function]
		if !ok {
			fi = record.Function{Name: a.Function}
		}
		row := get(by.Key(fi))
		i := slices.IndexFunc(row.Sinks, func(c result.SinkCount) bool { return c.Sink == a.Sink })
		if i < 0 {
			row.Sinks = append(row.Sinks, result.SinkCount{Sink: a.Sink})
			slices.SortFunc(row.Sinks, func(x, y result.SinkCount) int { return strings.Compare(x.Sink, y.Sink) })
			i = slices.IndexFunc(row.Sinks, func(c result.SinkCount) bool { return c.Sink == a.Sink })
		}
		c := &row.Sinks[i]
		c.Written += a.Written
		c.Dropped += a.Dropped
		c.ErrorsLost += a.ErrorsLost
	}
	return nil
}

// Gaps returns the probe gaps overlapping [f.Since, f.Until), oldest first.
func (q *Layer) Gaps(ctx context.Context, f Filter) ([]record.Gap, error) {
	return q.s.Gaps(ctx, f)
}

// Resources returns the resource samples in [f.Since, f.Until), oldest
// first; only f.PID and f.Limit of the other fields apply.
func (q *Layer) Resources(ctx context.Context, f Filter) ([]record.ResourceSample, error) {
	return q.s.Samples(ctx, f)
}

// Sessions returns every tracing session, oldest first.
func (q *Layer) Sessions(ctx context.Context) ([]record.Session, error) {
	return q.s.Sessions(ctx)
}

// Partitions lists the hour tables with their row counts and sizes.
func (q *Layer) Partitions(ctx context.Context) ([]result.Partition, error) {
	ps, err := q.s.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]result.Partition, len(ps))
	for i, p := range ps {
		out[i] = result.Partition{Name: p.Name, Kind: p.Kind, Start: p.Start, End: p.End, Rows: p.Rows, Bytes: p.Bytes}
	}
	return out, nil
}
