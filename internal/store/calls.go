package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Reads of the calls partitions. Each read picks, per hour, the cheapest
// complete structure (derived.go): the error lane for error-only filters,
// the function index for a function filter, the minute spans for a time
// range, and a scan of the hour only when none is complete (an hour of a
// store upgraded from schema 2, or an archive).

// callsCond is the WHERE clause of a calls query on alias c, without the
// time range. ok is false when the function glob matches nothing.
type callsCond struct {
	sql  string // "" or conditions joined with AND, each on c.
	args []any
	fids string // the c.func_id IN (...) condition alone, "" when none
}

func (r *rtx) callsCond(f *Filter) (callsCond, bool, error) {
	var conds []string
	var out callsCond
	if f.PID != 0 {
		conds = append(conds, "c.pid = ?")
		out.args = append(out.args, int64(f.PID))
	}
	if len(f.Status) > 0 {
		ss := make([]string, len(f.Status))
		for i, st := range f.Status {
			ss[i] = strconv.Itoa(int(st))
		}
		conds = append(conds, "c.status IN ("+strings.Join(ss, ",")+")")
	}
	if f.MinDuration > 0 {
		conds = append(conds, "c.duration_ns >= ?")
		out.args = append(out.args, f.MinDuration.Nanoseconds())
	}
	if f.Binary != nil {
		// A call is the process's that had its pid when it started.
		bc, bargs := f.Binary.cond("c", "start_ns", "start_ns")
		conds = append(conds, bc)
		out.args = append(out.args, bargs...)
	}
	fc, ok, err := r.funcCond("c.func_id", f.Func)
	if err != nil || !ok {
		return out, false, err
	}
	if fc != "" {
		conds = append(conds, fc)
		out.fids = fc
	}
	out.sql = strings.Join(conds, " AND ")
	return out, true, nil
}

func (c callsCond) and() string {
	if c.sql == "" {
		return ""
	}
	return " AND " + c.sql
}

const callSelect = `SELECT c.id, c.parent_id, c.pid, c.goid, c.func_id, c.start_ns, c.duration_ns, c.status, c.error_type, c.error, c.error_truncated FROM `

func (r *rtx) scanCalls(rows *sql.Rows, out []record.Call) ([]record.Call, error) {
	defer rows.Close()
	for rows.Next() {
		var c record.Call
		var id, pid, goid, fid, status, trunc int64
		var parent sql.NullInt64
		var etype, emsg sql.NullString
		if err := rows.Scan(&id, &parent, &pid, &goid, &fid, &c.Start, &c.Duration, &status, &etype, &emsg, &trunc); err != nil {
			return out, err
		}
		f, err := r.fn(fid)
		if err != nil {
			return out, err
		}
		c.ID, c.ParentID, c.PID, c.GoID = uint64(id), uint64(parent.Int64), uint32(pid), uint64(goid)
		c.Function, c.Status = f.name, record.Status(status)
		c.ErrorType, c.Error, c.ErrorTruncated = etype.String, emsg.String, trunc != 0
		out = append(out, c)
	}
	return out, rows.Err()
}

func (r *rtx) query(out []record.Call, q string, args ...any) ([]record.Call, error) {
	rows, err := r.tx.QueryContext(r.ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return r.scanCalls(rows, out)
}

// calls runs a calls query partition by partition. Partitions hold
// disjoint start ranges (a call lives in the hour of its start), so
// concatenating per-partition results sorted by (start_ns, id) is globally
// sorted, and a limit stops before touching older (or, for errors, newer)
// hours.
func (r *rtx) calls(f *Filter, desc bool) ([]record.Call, error) {
	lo, hi := f.Bounds()
	parts, err := r.parts(KindCalls, lo, hi)
	if err != nil {
		return nil, err
	}
	cond, ok, err := r.callsCond(f)
	if err != nil || !ok {
		return nil, err
	}
	if desc {
		slices.Reverse(parts)
	}
	var out []record.Call
	for _, p := range parts {
		n := math.MaxInt
		if f.Limit > 0 {
			n = f.Limit - len(out)
		}
		if out, err = r.callsIn(out, p, f, cond, max(lo, p.start), min(hi, p.end), desc, n); err != nil {
			return nil, err
		}
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	return out, nil
}

// callsIn appends up to n calls of partition p with start in [lo, hi).
func (r *rtx) callsIn(out []record.Call, p partRef, f *Filter, cond callsCond, lo, hi int64, desc bool, n int) ([]record.Call, error) {
	dir := ""
	if desc {
		dir = " DESC"
	}
	limit := ""
	if n != math.MaxInt {
		limit = " LIMIT " + strconv.Itoa(n)
	}
	errOnly := len(f.Status) > 0 && !slices.Contains(f.Status, record.StatusOK)
	if ok, err := r.complete(p.name, sideErr); err != nil || (errOnly && ok) {
		if err != nil {
			return nil, err
		}
		// Walk the error lane in (start_ns, id) order; each row is one
		// rowid lookup in the hour.
		q := callSelect + sideName(p.name, sideErr) + ` e CROSS JOIN ` + p.name + ` c ON c.id = e.id
			WHERE e.status != 0 AND e.start_ns >= ? AND e.start_ns < ?` + cond.and() +
			` ORDER BY e.start_ns` + dir + `, e.id` + dir + limit
		return r.query(out, q, append([]any{lo, hi}, cond.args...)...)
	}
	if ok, next, err := r.covered(p.name, sideFunc); err != nil || (cond.fids != "" && ok) {
		if err != nil {
			return nil, err
		}
		q := callSelect + sideName(p.name, sideFunc) + ` x CROSS JOIN ` + p.name + ` c ON c.id = x.id
			WHERE ` + strings.Replace(cond.fids, "c.func_id", "x.func_id", 1) + ` AND x.start_ns >= ? AND x.start_ns < ? AND x.id < ?` + cond.and() +
			` ORDER BY x.start_ns` + dir + `, x.id` + dir + limit
		got, err := r.query(nil, q, append([]any{lo, hi, next}, cond.args...)...)
		if err != nil || next == math.MaxInt64 {
			return append(out, got...), err
		}
		// The open hour's newest calls, above the builder's cursor.
		q = callSelect + p.name + ` c WHERE c.id >= ? AND c.start_ns >= ? AND c.start_ns < ?` + cond.and() +
			` ORDER BY c.start_ns` + dir + `, c.id` + dir + limit
		if got, err = r.query(got, q, append([]any{next, lo, hi}, cond.args...)...); err != nil {
			return nil, err
		}
		sortCalls(got, desc)
		return append(out, got[:min(len(got), n)]...), nil
	}
	if ok, err := r.complete(p.name, sideSpans); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return r.callsBySpans(out, p, cond, lo, hi, desc, n)
	}
	q := callSelect + p.name + ` c WHERE c.start_ns >= ? AND c.start_ns < ?` + cond.and() +
		` ORDER BY c.start_ns` + dir + `, c.id` + dir + limit
	return r.query(out, q, append([]any{lo, hi}, cond.args...)...)
}

// callsBySpans reads [lo, hi) of an hour bucket by bucket (10 s), each as
// the id ranges call_spans gives for it, so a range or a limit reads only
// the buckets it needs instead of the hour.
func (r *rtx) callsBySpans(out []record.Call, p partRef, cond callsCond, lo, hi int64, desc bool, n int) ([]record.Call, error) {
	// Buckets of the hour overlapping [lo, hi), each with its id ranges.
	type minute struct {
		start  int64
		ranges [][2]int64
	}
	spans, err := r.hourSpans(p.start)
	if err != nil {
		return nil, err
	}
	var mins []minute
	for _, sp := range spans {
		if sp.bucket+spanWidth <= lo || sp.bucket >= hi {
			continue
		}
		if len(mins) == 0 || mins[len(mins)-1].start != sp.bucket {
			mins = append(mins, minute{start: sp.bucket})
		}
		m := &mins[len(mins)-1]
		m.ranges = append(m.ranges, [2]int64{sp.lo, sp.hi})
	}
	if desc {
		slices.Reverse(mins)
	}
	dir := ""
	if desc {
		dir = " DESC"
	}
	q := callSelect + p.name + ` c WHERE c.id >= ? AND c.id <= ? AND c.start_ns >= ? AND c.start_ns < ?` + cond.and() +
		` ORDER BY c.start_ns` + dir + `, c.id` + dir + ` LIMIT ?`
	for _, m := range mins {
		if n <= 0 {
			break
		}
		from, to := max(lo, m.start), min(hi, m.start+spanWidth)
		var got []record.Call
		for _, rg := range m.ranges {
			var err error
			if got, err = r.query(got, q, append([]any{rg[0], rg[1], from, to}, append(cond.args, n)...)...); err != nil {
				return nil, err
			}
		}
		if len(m.ranges) > 1 {
			// Sessions' id ranges interleave in time: merge.
			sortCalls(got, desc)
		}
		got = got[:min(len(got), n)]
		out = append(out, got...)
		n -= len(got)
	}
	return out, nil
}

// sortCalls sorts by (start, id), or the reverse.
func sortCalls(calls []record.Call, desc bool) {
	slices.SortFunc(calls, func(a, b record.Call) int {
		c := cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.ID, b.ID))
		if desc {
			return -c
		}
		return c
	})
}

// Calls returns the calls matching f, oldest first by start.
func (s *Store) Calls(ctx context.Context, f Filter) ([]record.Call, error) {
	var out []record.Call
	err := s.read(ctx, "query calls", func(r *rtx) (err error) {
		out, err = r.calls(&f, false)
		return err
	})
	return out, err
}

// Errors returns the calls of the error lane (error, panic, unfinished unless
// f.Status says otherwise) matching f, newest first.
func (s *Store) Errors(ctx context.Context, f Filter) ([]record.Call, error) {
	if len(f.Status) == 0 {
		f.Status = []record.Status{record.StatusError, record.StatusPanic, record.StatusUnfinished}
	}
	var out []record.Call
	err := s.read(ctx, "query errors", func(r *rtx) (err error) {
		out, err = r.calls(&f, true)
		return err
	})
	return out, err
}

// byID loads the calls with the given ids. call_spans says which hours
// can hold an id (the id range of its session in the hour covers it; a
// session's ids grow with time, so that is normally one hour), so an id
// costs one rowid search, not one per hour; hours without complete spans
// are searched for every id.
func (r *rtx) byID(ids []uint64) (map[uint64]record.Call, error) {
	found := make(map[uint64]record.Call, len(ids))
	if len(ids) == 0 {
		return found, nil
	}
	if err := r.loadDerived(); err != nil {
		return nil, err
	}
	parts, err := r.parts(KindCalls, math.MinInt64, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	// Newest hour first: the ids asked for are usually recent.
	for i := len(parts) - 1; i >= 0 && len(found) < len(ids); i-- {
		p := parts[i]
		spans, err := r.complete(p.name, sideSpans)
		if err != nil {
			return nil, err
		}
		var hs map[int64][2]int64
		if spans {
			if hs, err = r.hourRanges(p.start); err != nil {
				return nil, err
			}
		}
		var want []uint64
		for _, id := range ids {
			if _, ok := found[id]; ok {
				continue
			}
			if rg, ok := hs[int64(id>>40)]; !spans || (ok && rg[0] <= int64(id) && int64(id) <= rg[1]) {
				want = append(want, id)
			}
		}
		for chunk := range slices.Chunk(want, 500) {
			got, err := r.query(nil, callSelect+p.name+` c WHERE c.id IN (`+idList(chunk)+`)`)
			if err != nil {
				return nil, err
			}
			for _, c := range got {
				found[c.ID] = c
			}
		}
	}
	return found, nil
}

// CallsByID returns the calls with the given ids that the store holds.
func (s *Store) CallsByID(ctx context.Context, ids []uint64) (map[uint64]record.Call, error) {
	var out map[uint64]record.Call
	err := s.read(ctx, "query calls by id", func(r *rtx) (err error) {
		out, err = r.byID(ids)
		return err
	})
	return out, err
}

func (r *rtx) call(id uint64) (record.Call, error) {
	m, err := r.byID([]uint64{id})
	if err != nil {
		return record.Call{}, err
	}
	c, ok := m[id]
	if !ok {
		return record.Call{}, fmt.Errorf("call %d: %w", id, ErrNotFound)
	}
	return c, nil
}

// Call returns the call with the id, or an error matching ErrNotFound.
func (s *Store) Call(ctx context.Context, id uint64) (record.Call, error) {
	var c record.Call
	err := s.read(ctx, "query call", func(r *rtx) (err error) {
		c, err = r.call(id)
		return err
	})
	return c, err
}

// Children returns the direct children of call id, oldest first. Children
// spawned on other goroutines may outlive the parent, so every partition
// from the parent's hour on is searched: through its parent index when the
// hour has one, else by a scan of the ids after the parent's (a child
// enters after its parent, so its id is larger).
func (s *Store) Children(ctx context.Context, id uint64) ([]record.Call, error) {
	var out []record.Call
	err := s.read(ctx, "query children", func(r *rtx) error {
		p, err := r.call(id)
		if err != nil {
			return err
		}
		parts, err := r.parts(KindCalls, p.Start, math.MaxInt64)
		if err != nil {
			return err
		}
		for _, pt := range parts {
			ok, next, err := r.covered(pt.name, sideParent)
			if err != nil {
				return err
			}
			var got []record.Call
			from := int64(id) + 1 // a child enters after its parent
			if ok {
				q := callSelect + pt.name + ` c WHERE c.id IN (SELECT id FROM ` + sideName(pt.name, sideParent) + ` WHERE parent_id = ? AND id < ?)`
				if got, err = r.query(got, q, int64(id), next); err != nil {
					return err
				}
				from = max(from, next)
			}
			if !ok || next != math.MaxInt64 {
				if got, err = r.query(got, callSelect+pt.name+` c WHERE c.id >= ? AND c.parent_id = ?`, from, int64(id)); err != nil {
					return err
				}
			}
			sortCalls(got, false)
			out = append(out, got...)
		}
		return nil
	})
	return out, err
}

// Descendants returns root and the ids of its descendants in breadth-first
// order, children of one parent in (hour, id) order, at most limit ids in
// all (0 = no limit); truncated reports whether some were left out. root
// must be a stored call (see Call).
//
// Hours with a parent index answer one query per tree level. Other hours
// (the live one) are read once: the (parent_id, id) pairs of the root's
// session with ids above the root's, since a descendant enters after it.
func (s *Store) Descendants(ctx context.Context, root record.Call, limit int) (ids []uint64, truncated bool, err error) {
	err = s.read(ctx, "query tree", func(r *rtx) error {
		parts, err := r.parts(KindCalls, root.Start, math.MaxInt64)
		if err != nil {
			return err
		}
		// Per hour: the parent index (when it covers ids below next), and
		// the (parent, child) pairs of the ids it doesn't cover, read once.
		indexed := make([]bool, len(parts))
		nexts := make([]int64, len(parts))
		scans := make([]map[uint64][]uint64, len(parts))
		sessEnd := int64((root.ID>>40 + 1) << 40)
		for i, p := range parts {
			if indexed[i], nexts[i], err = r.covered(p.name, sideParent); err != nil {
				return err
			}
			if indexed[i] && nexts[i] == math.MaxInt64 {
				continue
			}
			from := int64(root.ID) + 1 // a descendant enters after the root
			if indexed[i] {
				from = max(from, nexts[i])
			}
			m := map[uint64][]uint64{}
			if err := r.edges(m, `SELECT parent_id, id FROM `+p.name+
				` WHERE id >= ? AND id < ? AND parent_id IS NOT NULL ORDER BY id`, from, sessEnd); err != nil {
				return err
			}
			scans[i] = m
		}
		ids = []uint64{root.ID}
		seen := map[uint64]bool{root.ID: true}
		level := []uint64{root.ID}
		for len(level) > 0 {
			kids := map[uint64][]uint64{}
			for i, p := range parts {
				if indexed[i] {
					for chunk := range slices.Chunk(level, 500) {
						if err := r.edges(kids, `SELECT parent_id, id FROM `+sideName(p.name, sideParent)+
							` WHERE parent_id IN (`+idList(chunk)+`) AND id < ? ORDER BY parent_id, id`, nexts[i]); err != nil {
							return err
						}
					}
				}
				// Ids above the index's cursor come after those below
				// it, keeping each parent's children in id order.
				if scans[i] != nil {
					for _, pa := range level {
						kids[pa] = append(kids[pa], scans[i][pa]...)
					}
				}
			}
			var next []uint64
			for _, pa := range level {
				for _, ch := range kids[pa] {
					if seen[ch] {
						continue
					}
					if limit > 0 && len(ids) >= limit {
						truncated = true
						break
					}
					seen[ch] = true
					ids = append(ids, ch)
					next = append(next, ch)
				}
			}
			level = next
		}
		return nil
	})
	return ids, truncated, err
}

// Ancestry loads every stored ancestor of calls: the parents of all of
// them in one batch, then the grandparents, and so on, in one read, so n
// calls with chains of depth d cost d batched lookups, not n*d searches.
// A parent missing from the store (expired, sampled out) ends its chain;
// at most maxDepth levels are read.
func (s *Store) Ancestry(ctx context.Context, calls []record.Call, maxDepth int) (map[uint64]record.Call, error) {
	known := map[uint64]record.Call{}
	err := s.read(ctx, "query ancestors", func(r *rtx) error {
		tried := map[uint64]bool{}
		var need []uint64
		add := func(c *record.Call) {
			if p := c.ParentID; p != 0 && !tried[p] {
				tried[p] = true
				need = append(need, p)
			}
		}
		for i := range calls {
			add(&calls[i])
		}
		for level := 0; len(need) > 0 && level < maxDepth; level++ {
			got, err := r.byID(need)
			if err != nil {
				return err
			}
			batch := need
			need = nil
			for _, id := range batch {
				if c, ok := got[id]; ok {
					known[id] = c
					add(&c)
				}
			}
		}
		return nil
	})
	return known, err
}

// edges runs a query of (parent_id, id) pairs and appends each child to
// its parent's list in m, in the order of the rows.
func (r *rtx) edges(m map[uint64][]uint64, q string, args ...any) error {
	rows, err := r.tx.QueryContext(r.ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var pa, ch int64
		if err := rows.Scan(&pa, &ch); err != nil {
			return err
		}
		m[uint64(pa)] = append(m[uint64(pa)], uint64(ch))
	}
	return rows.Err()
}

// idList writes ids as an SQL list (1,2,3): ids are integers, so inlining
// them is safe, and it keeps one statement for any number of them.
func idList(ids []uint64) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(int64(id), 10))
	}
	return b.String()
}
