package query

import (
	"context"
	"fmt"
	"slices"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/store"
)

// The answers below serve pictures rather than tables (the web UI's
// charts and roll-ups); they compose the same store primitives.

// MaxSeriesBuckets bounds the buckets of a series: each is one stats read.
const MaxSeriesBuckets = 240

// SeriesPoint is the merged aggregate of the functions a filter selects
// over one bucket of time.
type SeriesPoint struct {
	Start, End int64 // Unix ns, [Start, End)
	// DataStart and DataEnd span the aggregated intervals (0 when none):
	// their calls started in [DataStart, DataEnd), which can reach past End.
	DataStart, DataEnd int64
	result.StatsRow
}

// Series splits [f.Since, f.Until) into at most buckets equal spans and
// merges the exact aggregates (those whose interval starts in the span) of
// the functions matching f.Func and f.PID in each: call rate, errors and
// latency percentiles over time. Both bounds must be set.
func (q *Layer) Series(ctx context.Context, f Filter, buckets int) ([]SeriesPoint, error) {
	if f.Since.IsZero() || f.Until.IsZero() || !f.Until.After(f.Since) {
		return nil, fmt.Errorf("series needs a range with since before until")
	}
	if buckets < 1 || buckets > MaxSeriesBuckets {
		return nil, fmt.Errorf("series buckets %d: want 1..%d", buckets, MaxSeriesBuckets)
	}
	lo, hi := f.Since.UnixNano(), f.Until.UnixNano()
	step := max((hi-lo+int64(buckets)-1)/int64(buckets), 1)
	per, err := q.s.StatsSeries(ctx, f, step)
	if err != nil {
		return nil, err
	}
	out := make([]SeriesPoint, len(per))
	for i := range per {
		p := SeriesPoint{Start: lo + int64(i)*step, End: min(lo+int64(i+1)*step, hi), DataStart: per[i].IntervalStart, DataEnd: per[i].IntervalEnd}
		p.FuncStats = per[i]
		p.Finish()
		p.PID, p.IntervalStart, p.IntervalEnd = 0, 0, 0
		out[i] = p
	}
	return out, nil
}

// ErrorGroup counts the error-lane calls of one function with one status,
// error type and text.
type ErrorGroup struct {
	Function, Type, Text string
	Status               record.Status
	Count                int
	First, Last          int64 // Unix ns of the oldest and newest start
	LastID               uint64
}

// ErrorGroups groups the newest at most scan error-lane calls matching f
// (f.Limit is replaced by scan) by function, status, type and text, most
// frequent first. partial says the scan limit cut the range short, so
// counts are of the newest scan calls only.
func (q *Layer) ErrorGroups(ctx context.Context, f Filter, scan int) (groups []ErrorGroup, partial bool, err error) {
	f.Limit = scan
	calls, err := q.s.Errors(ctx, f)
	if err != nil {
		return nil, false, err
	}
	type key struct {
		fn, typ, text string
		st            record.Status
	}
	idx := map[key]int{}
	for i := range calls {
		c := &calls[i]
		k := key{c.Function, c.ErrorType, c.Error, c.Status}
		j, ok := idx[k]
		if !ok {
			j = len(groups)
			idx[k] = j
			groups = append(groups, ErrorGroup{Function: c.Function, Type: c.ErrorType, Text: c.Error, Status: c.Status,
				First: c.Start, Last: c.Start, LastID: c.ID})
		}
		g := &groups[j]
		g.Count++
		if c.Start < g.First {
			g.First = c.Start
		}
		if c.Start > g.Last {
			g.Last, g.LastID = c.Start, c.ID
		}
	}
	slices.SortStableFunc(groups, func(a, b ErrorGroup) int { return b.Count - a.Count })
	return groups, scan > 0 && len(calls) >= scan, nil
}

// RetentionLog is the store's record of hours archived and dropped,
// oldest first.
func (q *Layer) RetentionLog(ctx context.Context) ([]store.RetentionEntry, error) {
	return q.s.RetentionLog(ctx)
}

// RetentionSettings returns the retention window and archive directory of
// the agents that write the store now (sessions without an end, oldest
// first). When none runs it returns the newest session's alone: the window
// the store was last kept to, which nothing enforces until an agent writes
// it again. Sessions stored before the store kept the settings (schema 8)
// are passed over; nil when no session says.
func (q *Layer) RetentionSettings(ctx context.Context) ([]result.RetentionSetting, error) {
	ss, err := q.s.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	var running []result.RetentionSetting
	var last *result.RetentionSetting
	for _, s := range ss {
		if s.Retention <= 0 {
			continue
		}
		r := result.RetentionSetting{Session: s.ID, Running: s.End == 0, Window: s.Retention, ArchiveDir: s.ArchiveDir}
		if r.Running {
			running = append(running, r)
		}
		last = &r
	}
	if len(running) > 0 || last == nil {
		return running, nil
	}
	return []result.RetentionSetting{*last}, nil
}
