package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/obs-agent/obs-agent/internal/glob"
	"github.com/obs-agent/obs-agent/internal/record"
)

// Filter selects records. Zero fields don't filter.
type Filter struct {
	Since, Until time.Time // [Since, Until) on the record's start time
	PID          uint32
	// Func is a glob over full function names (package internal/glob).
	Func        string
	Status      []record.Status
	MinDuration time.Duration
	Limit       int // 0 = all
	// Binary, when set, keeps only the records of the processes that ran
	// that binary (the processes table, schema 7). Calls, Errors, Stats
	// and Gaps honour it.
	Binary *BinaryMatch
}

// BinaryMatch selects traced processes by what they ran: a process
// matches when its stored path is one of Paths or its build id one of
// BuildIDs. A record (stats interval, gap) is a matching process's when
// its pid is the process's and its time falls in the process's lifetime,
// so a pid reused by another program is told apart.
type BinaryMatch struct {
	Paths, BuildIDs []string
}

// cond is the SQL condition that a row of table, with its pid and its
// time span in the columns from and to, is of a matching process.
func (m *BinaryMatch) cond(table, from, to string) (string, []any) {
	var alts []string
	var args []any
	for _, set := range []struct {
		col  string
		vals []string
	}{{"pr.binary", m.Paths}, {"pr.build_id", m.BuildIDs}} {
		if len(set.vals) == 0 {
			continue
		}
		alts = append(alts, set.col+" IN (?"+strings.Repeat(", ?", len(set.vals)-1)+")")
		for _, v := range set.vals {
			args = append(args, v)
		}
	}
	if len(alts) == 0 {
		return "0", nil
	}
	// The outer columns are qualified by table: unqualified, pid would
	// name the processes row's own.
	return `EXISTS (SELECT 1 FROM processes pr WHERE pr.pid = ` + table + `.pid AND (` + strings.Join(alts, " OR ") + `)
		AND pr.start_ns <= ` + table + `.` + to + ` AND (pr.end_ns = 0 OR pr.end_ns >= ` + table + `.` + from + `))`, args
}

// Bounds is the range [lo, hi) in Unix ns that Since and Until select.
func (f *Filter) Bounds() (lo, hi int64) {
	lo, hi = int64(math.MinInt64), int64(math.MaxInt64)
	if !f.Since.IsZero() {
		lo = f.Since.UnixNano()
	}
	if !f.Until.IsZero() {
		hi = f.Until.UnixNano()
	}
	return lo, hi
}

// rtx is one read transaction: the catalog and the partitions it lists come
// from the same snapshot, so a concurrent retention drop can't make a listed
// table vanish mid-query.
type rtx struct {
	s   *Store
	ctx context.Context
	tx  *sql.Tx

	states map[string]string            // derived states, loaded on first use
	next   map[string]int64             // cursors of the side tables being built
	spans  map[int64][]spanRow          // call_spans by hour, loaded on first use
	ranges map[int64]map[int64][2]int64 // hour -> session -> id range, loaded on first use
	loaded bool
}

func (s *Store) read(ctx context.Context, op string, fn func(r *rtx) error) error {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return classify(op, err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	return classify(op, fn(&rtx{s: s, ctx: ctx, tx: tx}))
}

type partRef struct {
	name       string
	start, end int64
}

// parts lists the partitions of kind overlapping [lo, hi), oldest first.
func (r *rtx) parts(kind string, lo, hi int64) ([]partRef, error) {
	return r.catalog(true, `SELECT name, start_ns, end_ns FROM partitions
		WHERE kind = ? AND end_ns > ? AND start_ns < ? ORDER BY start_ns`, kind, lo, hi)
}

// catalog reads the partitions a query of the catalog selects (name, start,
// end). A name that is not a partition's (a table name is built from it)
// is ErrCorrupt when strict, else passed over.
func (r *rtx) catalog(strict bool, q string, args ...any) ([]partRef, error) {
	rows, err := r.tx.QueryContext(r.ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []partRef
	for rows.Next() {
		var p partRef
		if err := rows.Scan(&p.name, &p.start, &p.end); err != nil {
			return nil, err
		}
		if _, _, ok := ParsePartitionName(p.name); !ok {
			if strict {
				return nil, fmt.Errorf("%w: bad partition name %q in catalog", ErrCorrupt, p.name)
			}
			continue
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// loadFuncs refreshes the reader's function cache with rows added since.
func (r *rtx) loadFuncs() error {
	r.s.fmu.Lock()
	defer r.s.fmu.Unlock()
	if r.s.funcs == nil {
		r.s.funcs = map[int64]funcInfo{}
	}
	var maxID int64
	for id := range r.s.funcs {
		maxID = max(maxID, id)
	}
	rows, err := r.tx.QueryContext(r.ctx, `SELECT id, name, package, module FROM functions WHERE id > ?`, maxID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var f funcInfo
		if err := rows.Scan(&id, &f.name, &f.pkg, &f.module); err != nil {
			return err
		}
		r.s.funcs[id] = f
	}
	return rows.Err()
}

func (r *rtx) fn(id int64) (funcInfo, error) {
	r.s.fmu.Lock()
	f, ok := r.s.funcs[id]
	r.s.fmu.Unlock()
	if ok {
		return f, nil
	}
	if err := r.loadFuncs(); err != nil {
		return funcInfo{}, err
	}
	r.s.fmu.Lock()
	defer r.s.fmu.Unlock()
	if f, ok := r.s.funcs[id]; ok {
		return f, nil
	}
	return funcInfo{name: fmt.Sprintf("func#%d", id)}, nil
}

// funcCond returns an SQL condition on the function id column col for a
// glob, or "" for none. ok is false when no function matches (the result
// is empty).
func (r *rtx) funcCond(col, pattern string) (cond string, ok bool, err error) {
	if pattern == "" || strings.Trim(pattern, "*") == "" {
		return "", true, nil
	}
	if err := r.loadFuncs(); err != nil {
		return "", false, err
	}
	g := glob.Compile(pattern)
	r.s.fmu.Lock()
	var ids []int64
	for id, f := range r.s.funcs {
		if g.Match(f.name) {
			ids = append(ids, id)
		}
	}
	r.s.fmu.Unlock()
	if len(ids) == 0 {
		return "", false, nil
	}
	slices.Sort(ids)
	var b strings.Builder
	b.WriteString(col + " IN (")
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte(')')
	return b.String(), true, nil
}

// partsBegun lists the calls and stats partitions of hours that began at
// or before now, oldest first.
func (r *rtx) partsBegun(now int64) ([]partRef, error) {
	return r.catalog(false, `SELECT name, start_ns, end_ns FROM partitions
		WHERE kind IN (?, ?) AND start_ns <= ? ORDER BY start_ns, name`, KindCalls, KindStats, now)
}

// spanRow is one row of call_spans.
type spanRow struct {
	hour, bucket, session, lo, hi int64
}

// loadDerived reads the derived states once per read. A
// store older than schema 3 (opened read-only, so not migrated) has
// neither table: every side structure then counts as missing and reads
// fall back to scans.
func (r *rtx) loadDerived() error {
	if r.loaded {
		return nil
	}
	r.loaded = true
	r.states = map[string]string{}
	r.next = map[string]int64{}
	var n int
	if err := r.tx.QueryRowContext(r.ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('derived', 'call_spans')`).Scan(&n); err != nil {
		return err
	}
	if n < 2 {
		return nil
	}
	rows, err := r.tx.QueryContext(r.ctx, `SELECT name, state, next_id FROM derived`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, state string
		var next int64
		if err := rows.Scan(&name, &state, &next); err != nil {
			rows.Close()
			return err
		}
		r.states[name] = state
		r.next[name] = next
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	return nil
}

// hourSpans returns the call_spans rows of an hour, by bucket and session.
func (r *rtx) hourSpans(hour int64) ([]spanRow, error) {
	if sp, ok := r.spans[hour]; ok {
		return sp, nil
	}
	if r.spans == nil {
		r.spans = map[int64][]spanRow{}
	}
	rows, err := r.tx.QueryContext(r.ctx, `SELECT bucket_ns, session, min_id, max_id FROM call_spans WHERE hour_ns = ? ORDER BY bucket_ns, session`, hour)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []spanRow
	for rows.Next() {
		sp := spanRow{hour: hour}
		if err := rows.Scan(&sp.bucket, &sp.session, &sp.lo, &sp.hi); err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	r.spans[hour] = out
	return out, rows.Err()
}

// hourRanges returns, per session, the smallest and largest id of the
// calls that started in the hour (call_ranges).
func (r *rtx) hourRanges(hour int64) (map[int64][2]int64, error) {
	if r.ranges == nil {
		r.ranges = map[int64]map[int64][2]int64{}
		rows, err := r.tx.QueryContext(r.ctx, `SELECT hour_ns, session, min_id, max_id FROM call_ranges`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var h, sess, lo, hi int64
			if err := rows.Scan(&h, &sess, &lo, &hi); err != nil {
				return nil, err
			}
			if r.ranges[h] == nil {
				r.ranges[h] = map[int64][2]int64{}
			}
			r.ranges[h][sess] = [2]int64{lo, hi}
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return r.ranges[hour], nil
}

func (r *rtx) derivedStates() (map[string]string, error) {
	if err := r.loadDerived(); err != nil {
		return nil, err
	}
	return r.states, nil
}

// complete reports whether the side structure of table is complete, so a
// read may use it instead of scanning table.
func (r *rtx) complete(table, side string) (bool, error) {
	if err := r.loadDerived(); err != nil {
		return false, err
	}
	if r.s.ignoreDerived {
		return false, nil
	}
	st := r.states[sideName(table, side)]
	return st == stateLive || st == stateDone, nil
}

// covered reports whether the side table of table can serve a read, and
// below which id it holds every call: math.MaxInt64 when complete; the
// builder's cursor while it is being built (the open hour, or a build
// that was interrupted), in which case the reader scans the calls from
// the cursor on itself. Only the parent and function indexes and the
// stats rollups (cursor: a rowid of the stats table) are read this way;
// the others are used only complete.
func (r *rtx) covered(table, side string) (bool, int64, error) {
	if ok, err := r.complete(table, side); err != nil || ok {
		return ok, math.MaxInt64, err
	}
	n := sideName(table, side)
	if r.s.ignoreDerived || r.states[n] != stateBuilding || (side != sideParent && side != sideFunc && side != sideRollup && side != sideRollup10) {
		return false, 0, nil
	}
	return true, r.next[n], nil
}

// FunctionInfo returns every registered function by name.
func (s *Store) FunctionInfo(ctx context.Context) (map[string]record.Function, error) {
	out := map[string]record.Function{}
	err := s.read(ctx, "read functions", func(r *rtx) error {
		if err := r.loadFuncs(); err != nil {
			return err
		}
		r.s.fmu.Lock()
		defer r.s.fmu.Unlock()
		for _, f := range r.s.funcs {
			out[f.name] = record.Function{Name: f.name, Package: f.pkg, Module: f.module}
		}
		return nil
	})
	return out, err
}
