package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/obs-agent/obs-agent/internal/glob"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

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
}

func (f *Filter) bounds() (int64, int64) {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
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
	rows, err := r.tx.QueryContext(r.ctx, `SELECT name, start_ns, end_ns FROM partitions
		WHERE kind = ? AND end_ns > ? AND start_ns < ? ORDER BY start_ns`, kind, lo, hi)
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
			return nil, fmt.Errorf("%w: bad partition name %q in catalog", ErrCorrupt, p.name)
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

// funcCond returns an SQL condition on func_id for a glob, or "" for none.
// ok is false when no function matches (the result is empty).
func (r *rtx) funcCond(pattern string) (cond string, ok bool, err error) {
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
	b.WriteString("func_id IN (")
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte(')')
	return b.String(), true, nil
}

// where builds the shared WHERE clause of a calls query.
func (r *rtx) callsWhere(f *Filter, lo, hi int64) (string, []any, bool, error) {
	conds := []string{"start_ns >= ?", "start_ns < ?"}
	args := []any{lo, hi}
	if f.PID != 0 {
		conds = append(conds, "pid = ?")
		args = append(args, int64(f.PID))
	}
	if len(f.Status) > 0 {
		ss := make([]string, len(f.Status))
		for i, st := range f.Status {
			ss[i] = strconv.Itoa(int(st))
		}
		conds = append(conds, "status IN ("+strings.Join(ss, ",")+")")
		if !slices.Contains(f.Status, record.StatusOK) {
			// Lets SQLite use the partial error-lane index.
			conds = append(conds, "status != 0")
		}
	}
	if f.MinDuration > 0 {
		conds = append(conds, "duration_ns >= ?")
		args = append(args, f.MinDuration.Nanoseconds())
	}
	fc, ok, err := r.funcCond(f.Func)
	if err != nil || !ok {
		return "", nil, false, err
	}
	if fc != "" {
		conds = append(conds, fc)
	}
	return strings.Join(conds, " AND "), args, true, nil
}

const callSelect = `SELECT id, parent_id, pid, goid, func_id, start_ns, duration_ns, status, error_type, error, error_truncated FROM `

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

// calls runs a calls query partition by partition and merges in Go.
// Partitions hold disjoint start ranges (a call lives in the hour of its
// start), so concatenating per-partition ORDER BY start_ns results is
// already globally sorted, and a LIMIT stops before touching older (or, for
// errors, newer) hours. A UNION ALL ... ORDER BY ... LIMIT over all
// overlapping partitions would have to sort their union. (Chosen on that
// reasoning; the UNION ALL variant was not benchmarked.)
func (r *rtx) calls(f *Filter, desc bool) ([]record.Call, error) {
	lo, hi := f.bounds()
	parts, err := r.parts(KindCalls, lo, hi)
	if err != nil {
		return nil, err
	}
	where, args, ok, err := r.callsWhere(f, lo, hi)
	if err != nil || !ok {
		return nil, err
	}
	order := " ORDER BY start_ns, id"
	if desc {
		order = " ORDER BY start_ns DESC, id DESC"
		slices.Reverse(parts)
	}
	var out []record.Call
	for _, p := range parts {
		q := callSelect + p.name + " WHERE " + where + order
		a := args
		if f.Limit > 0 {
			q += " LIMIT ?"
			a = append(slices.Clip(args), f.Limit-len(out))
		}
		rows, err := r.tx.QueryContext(r.ctx, q, a...)
		if err != nil {
			return nil, err
		}
		if out, err = r.scanCalls(rows, out); err != nil {
			return nil, err
		}
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	return out, nil
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

// call finds a call by id in the partitions starting at or before maxStart,
// newest first (a parent starts no later than its child).
func (r *rtx) call(id uint64, maxStart int64) (record.Call, error) {
	parts, err := r.parts(KindCalls, math.MinInt64, maxStart+1)
	if err != nil {
		return record.Call{}, err
	}
	for i := len(parts) - 1; i >= 0; i-- {
		rows, err := r.tx.QueryContext(r.ctx, callSelect+parts[i].name+" WHERE id = ?", int64(id))
		if err != nil {
			return record.Call{}, err
		}
		out, err := r.scanCalls(rows, nil)
		if err != nil {
			return record.Call{}, err
		}
		if len(out) > 0 {
			return out[0], nil
		}
	}
	return record.Call{}, fmt.Errorf("call %d: %w", id, ErrNotFound)
}

// Call returns the call with the id, or an error matching ErrNotFound.
func (s *Store) Call(ctx context.Context, id uint64) (record.Call, error) {
	var c record.Call
	err := s.read(ctx, "query call", func(r *rtx) (err error) {
		c, err = r.call(id, math.MaxInt64-1)
		return err
	})
	return c, err
}

// Ancestors returns the chain of parents of call id, root first, ending with
// the call itself. A parent missing from the store (expired, or lost) ends
// the chain there.
func (s *Store) Ancestors(ctx context.Context, id uint64) ([]record.Call, error) {
	var chain []record.Call
	err := s.read(ctx, "query ancestors", func(r *rtx) error {
		c, err := r.call(id, math.MaxInt64-1)
		if err != nil {
			return err
		}
		chain = append(chain, c)
		for c.ParentID != 0 && len(chain) < 10000 {
			p, err := r.call(c.ParentID, c.Start)
			if errors.Is(err, ErrNotFound) {
				break
			}
			if err != nil {
				return err
			}
			chain = append(chain, p)
			c = p
		}
		slices.Reverse(chain)
		return nil
	})
	return chain, err
}

// children returns the calls whose parent is id, searching the partitions
// that end after minStart, oldest first. There is no parent_id index (it
// would cost the writer about a third of its rate, see bench_test.go), so
// this scans those partitions: ~100 ms per million calls.
func (r *rtx) children(id uint64, minStart int64) ([]record.Call, error) {
	parts, err := r.parts(KindCalls, minStart, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	var out []record.Call
	for _, p := range parts {
		rows, err := r.tx.QueryContext(r.ctx, callSelect+p.name+" WHERE parent_id = ? ORDER BY start_ns, id", int64(id))
		if err != nil {
			return nil, err
		}
		if out, err = r.scanCalls(rows, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Children returns the direct children of call id, oldest first. Children
// spawned on other goroutines may outlive the parent, so every partition
// from the parent's hour on is searched.
func (s *Store) Children(ctx context.Context, id uint64) ([]record.Call, error) {
	var out []record.Call
	err := s.read(ctx, "query children", func(r *rtx) error {
		p, err := r.call(id, math.MaxInt64-1)
		if err != nil {
			return err
		}
		out, err = r.children(id, p.Start)
		return err
	})
	return out, err
}

// Subtree returns call id and all its descendants in depth-first pre-order,
// children oldest first; depth[i] is calls[i]'s depth below the root (0).
// At most limit calls are returned (0 = all); truncated reports whether
// some were left out.
//
// It reads the (id, parent_id) edges of every partition from the root's
// hour on once, builds the tree in memory, then loads the subtree's rows by
// id: one pass per partition instead of one scan per tree level.
func (s *Store) Subtree(ctx context.Context, id uint64, limit int) (calls []record.Call, depth []int, truncated bool, err error) {
	err = s.read(ctx, "query tree", func(r *rtx) error {
		root, err := r.call(id, math.MaxInt64-1)
		if err != nil {
			return err
		}
		parts, err := r.parts(KindCalls, root.Start, math.MaxInt64)
		if err != nil {
			return err
		}
		type edge struct{ parent, child uint64 }
		var edges []edge
		for _, p := range parts {
			rows, err := r.tx.QueryContext(r.ctx, `SELECT parent_id, id FROM `+p.name+` WHERE parent_id IS NOT NULL`)
			if err != nil {
				return err
			}
			for rows.Next() {
				var e edge
				var pa, ch int64
				if err := rows.Scan(&pa, &ch); err != nil {
					rows.Close()
					return err
				}
				e.parent, e.child = uint64(pa), uint64(ch)
				edges = append(edges, e)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		slices.SortFunc(edges, func(a, b edge) int {
			if a.parent != b.parent {
				if a.parent < b.parent {
					return -1
				}
				return 1
			}
			return 0
		})
		kidsOf := func(p uint64) []edge {
			i, _ := slices.BinarySearchFunc(edges, p, func(e edge, t uint64) int {
				switch {
				case e.parent < t:
					return -1
				case e.parent > t:
					return 1
				}
				return 0
			})
			j := i
			for j < len(edges) && edges[j].parent == p {
				j++
			}
			return edges[i:j]
		}
		// Collect the subtree's ids breadth first, then load their rows.
		ids := []uint64{id}
		seen := map[uint64]bool{id: true}
		for i := 0; i < len(ids); i++ {
			for _, e := range kidsOf(ids[i]) {
				if seen[e.child] {
					continue
				}
				if limit > 0 && len(ids) >= limit {
					truncated = true
					break
				}
				seen[e.child] = true
				ids = append(ids, e.child)
			}
		}
		byID := map[uint64]record.Call{id: root}
		for _, p := range parts {
			for chunk := range slices.Chunk(ids[1:], 500) {
				var in strings.Builder
				for i, c := range chunk {
					if i > 0 {
						in.WriteByte(',')
					}
					in.WriteString(strconv.FormatInt(int64(c), 10))
				}
				rows, err := r.tx.QueryContext(r.ctx, callSelect+p.name+` WHERE id IN (`+in.String()+`)`)
				if err != nil {
					return err
				}
				got, err := r.scanCalls(rows, nil)
				if err != nil {
					return err
				}
				for _, c := range got {
					byID[c.ID] = c
				}
			}
		}
		kids := map[uint64][]uint64{}
		for _, cid := range ids[1:] {
			if c, ok := byID[cid]; ok {
				kids[c.ParentID] = append(kids[c.ParentID], cid)
			}
		}
		var walk func(uint64, int)
		walk = func(n uint64, d int) {
			calls = append(calls, byID[n])
			depth = append(depth, d)
			ks := kids[n]
			slices.SortFunc(ks, func(a, b uint64) int {
				if c := cmp.Compare(byID[a].Start, byID[b].Start); c != 0 {
					return c
				}
				return cmp.Compare(int64(a), int64(b))
			})
			for _, k := range ks {
				walk(k, d+1)
			}
		}
		walk(id, 0)
		return nil
	})
	return calls, depth, truncated, err
}

// StatsRow is the merged aggregate of one function, package or module.
type StatsRow struct {
	Key                        string // function name, package or module ("" = unknown module)
	Calls, Errors, Panics      uint64
	Recorded, Sampled, Dropped uint64
	TotalNs, MaxNs             uint64
	Hist                       [record.HistBuckets]uint64
	P50, P90, P99              uint64 // ns; see Percentile
	MeanNs                     uint64
	Gaps                       int           // probe gaps overlapping the range
	GapTime                    time.Duration // their total length inside the range
}

// Lost is every call made but not recorded (sampled out or dropped).
func (r *StatsRow) Lost() uint64 { return r.Sampled + r.Dropped }

// Percentile returns the q-quantile (0 < q <= 1) of a log2 histogram whose
// bucket i counts durations 2^(i-1) <= d < 2^i (bucket 0: d == 0).
//
// It takes the rank ceil(q*total), finds the bucket holding it and reports
// that bucket's largest value, 2^i - 1, capped at maxNs (the exact maximum)
// when maxNs > 0. The result is therefore an upper bound: the true quantile
// t satisfies t <= Percentile < 2t (or equals maxNs). No interpolation, so a
// known histogram gives a known, exact answer. Returns 0 for an empty
// histogram.
func Percentile(h *[record.HistBuckets]uint64, maxNs uint64, q float64) uint64 {
	var total uint64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	rank = max(rank, 1)
	var cum uint64
	for i, n := range h {
		cum += n
		if cum >= rank {
			var v uint64
			if i > 0 {
				if i >= 64 {
					v = math.MaxUint64
				} else {
					v = 1<<uint(i) - 1
				}
			}
			if maxNs > 0 && v > maxNs {
				v = maxNs
			}
			return v
		}
	}
	return maxNs
}

func groupKey(f funcInfo, by string) string {
	switch by {
	case "package":
		return f.pkg
	case "module":
		return f.module
	}
	return f.name
}

// Stats merges the per-function aggregates (the stats partitions, not the
// calls) whose interval starts in [f.Since, f.Until), grouped by
// "function" (default), "package" or "module". f.Status and f.MinDuration
// don't apply. Rows are sorted by calls, most first; f.Limit keeps the top
// rows. Gaps and GapTime count the probe gaps of the group's functions that
// overlap the range.
func (s *Store) Stats(ctx context.Context, f Filter, by string) ([]StatsRow, error) {
	switch by {
	case "", "function":
		by = "function"
	case "package", "module":
	default:
		return nil, fmt.Errorf("store: stats: unknown grouping %q (want function, package or module)", by)
	}
	lo, hi := f.bounds()
	groups := map[string]*StatsRow{}
	get := func(k string) *StatsRow {
		g := groups[k]
		if g == nil {
			g = &StatsRow{Key: k}
			groups[k] = g
		}
		return g
	}
	err := s.read(ctx, "query stats", func(r *rtx) error {
		parts, err := r.parts(KindStats, lo, hi)
		if err != nil {
			return err
		}
		conds := []string{"interval_start_ns >= ?", "interval_start_ns < ?"}
		args := []any{lo, hi}
		if f.PID != 0 {
			conds = append(conds, "pid = ?")
			args = append(args, int64(f.PID))
		}
		fc, ok, err := r.funcCond(f.Func)
		if err != nil || !ok {
			return err
		}
		if fc != "" {
			conds = append(conds, fc)
		}
		where := strings.Join(conds, " AND ")
		for _, p := range parts {
			rows, err := r.tx.QueryContext(r.ctx, `SELECT func_id, calls, errors, panics, recorded, sampled, dropped, total_ns, max_ns, hist FROM `+p.name+` WHERE `+where, args...)
			if err != nil {
				return err
			}
			err = func() error {
				defer rows.Close()
				for rows.Next() {
					var fid, calls, errs, panics, rec, samp, drop, tot, mx int64
					var hist []byte
					if err := rows.Scan(&fid, &calls, &errs, &panics, &rec, &samp, &drop, &tot, &mx, &hist); err != nil {
						return err
					}
					fi, err := r.fn(fid)
					if err != nil {
						return err
					}
					g := get(groupKey(fi, by))
					g.Calls += uint64(calls)
					g.Errors += uint64(errs)
					g.Panics += uint64(panics)
					g.Recorded += uint64(rec)
					g.Sampled += uint64(samp)
					g.Dropped += uint64(drop)
					g.TotalNs += uint64(tot)
					g.MaxNs = max(g.MaxNs, uint64(mx))
					if err := decodeHist(hist, &g.Hist); err != nil {
						return err
					}
				}
				return rows.Err()
			}()
			if err != nil {
				return err
			}
		}
		gaps, err := r.gaps(&f, lo, hi)
		if err != nil {
			return err
		}
		for _, gp := range gaps {
			fi, err := r.fn(gp.funcID)
			if err != nil {
				return err
			}
			k := groupKey(fi, by)
			g := groups[k]
			if g == nil {
				g = get(k)
			}
			g.Gaps++
			end := gp.End
			if end == 0 || end > hi {
				end = min(hi, time.Now().UnixNano())
			}
			g.GapTime += time.Duration(max(0, end-max(gp.Start, lo)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]StatsRow, 0, len(groups))
	for _, g := range groups {
		g.P50 = Percentile(&g.Hist, g.MaxNs, 0.50)
		g.P90 = Percentile(&g.Hist, g.MaxNs, 0.90)
		g.P99 = Percentile(&g.Hist, g.MaxNs, 0.99)
		if g.Calls > 0 {
			g.MeanNs = g.TotalNs / g.Calls
		}
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b StatsRow) int {
		if a.Calls != b.Calls {
			if a.Calls > b.Calls {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

type gapRow struct {
	record.Gap
	funcID int64
}

// gaps returns the gaps overlapping [lo, hi). A gap lives in the partition
// of its start, which may be older than lo, so every partition starting
// before hi is read (gap tables are tiny).
func (r *rtx) gaps(f *Filter, lo, hi int64) ([]gapRow, error) {
	parts, err := r.parts(KindGaps, math.MinInt64, hi)
	if err != nil {
		return nil, err
	}
	conds := []string{"start_ns < ?", "(end_ns = 0 OR end_ns > ?)"}
	args := []any{hi, lo}
	if f.PID != 0 {
		conds = append(conds, "pid = ?")
		args = append(args, int64(f.PID))
	}
	fc, ok, err := r.funcCond(f.Func)
	if err != nil || !ok {
		return nil, err
	}
	if fc != "" {
		conds = append(conds, fc)
	}
	var out []gapRow
	for _, p := range parts {
		rows, err := r.tx.QueryContext(r.ctx, `SELECT pid, func_id, start_ns, end_ns, reason FROM `+p.name+
			` WHERE `+strings.Join(conds, " AND ")+` ORDER BY start_ns`, args...)
		if err != nil {
			return nil, err
		}
		err = func() error {
			defer rows.Close()
			for rows.Next() {
				var g gapRow
				var pid int64
				if err := rows.Scan(&pid, &g.funcID, &g.Start, &g.End, &g.Reason); err != nil {
					return err
				}
				g.PID = uint32(pid)
				fi, err := r.fn(g.funcID)
				if err != nil {
					return err
				}
				g.Function = fi.name
				out = append(out, g)
			}
			return rows.Err()
		}()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Gaps returns the probe gaps overlapping [f.Since, f.Until), oldest first.
// End is 0 for a gap still open.
func (s *Store) Gaps(ctx context.Context, f Filter) ([]record.Gap, error) {
	var out []record.Gap
	err := s.read(ctx, "query gaps", func(r *rtx) error {
		lo, hi := f.bounds()
		gs, err := r.gaps(&f, lo, hi)
		for _, g := range gs {
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
			out = append(out, g.Gap)
		}
		return err
	})
	return out, err
}

// Samples returns the resource samples with Time in [f.Since, f.Until),
// oldest first. Only PID and Limit of the other filter fields apply.
func (s *Store) Samples(ctx context.Context, f Filter) ([]record.ResourceSample, error) {
	var out []record.ResourceSample
	err := s.read(ctx, "query samples", func(r *rtx) error {
		lo, hi := f.bounds()
		parts, err := r.parts(KindSamples, lo, hi)
		if err != nil {
			return err
		}
		conds := "time_ns >= ? AND time_ns < ?"
		args := []any{lo, hi}
		if f.PID != 0 {
			conds += " AND pid = ?"
			args = append(args, int64(f.PID))
		}
		for _, p := range parts {
			q := `SELECT pid, time_ns, cpu_percent, rss_bytes, vms_bytes, threads, open_fds, read_bytes, write_bytes,
				vol_ctx_switches, inv_ctx_switches, goroutines FROM ` + p.name + ` WHERE ` + conds + ` ORDER BY time_ns`
			a := args
			if f.Limit > 0 {
				q += " LIMIT ?"
				a = append(slices.Clip(args), f.Limit-len(out))
			}
			rows, err := r.tx.QueryContext(r.ctx, q, a...)
			if err != nil {
				return err
			}
			err = func() error {
				defer rows.Close()
				for rows.Next() {
					var rs record.ResourceSample
					var pid int64
					var cpu sql.NullFloat64
					var rss, vms, thr, fds, rd, wr, vol, inv, gor sql.NullInt64
					if err := rows.Scan(&pid, &rs.Time, &cpu, &rss, &vms, &thr, &fds, &rd, &wr, &vol, &inv, &gor); err != nil {
						return err
					}
					rs.PID = uint32(pid)
					if cpu.Valid {
						rs.CPUPercent = &cpu.Float64
					}
					rs.RSSBytes, rs.VMSBytes = u64p(rss), u64p(vms)
					rs.Threads, rs.OpenFDs, rs.Goroutines = i64p(thr), i64p(fds), i64p(gor)
					rs.ReadBytes, rs.WriteBytes = u64p(rd), u64p(wr)
					rs.VolCtxSwitches, rs.InvCtxSwitches = u64p(vol), u64p(inv)
					out = append(out, rs)
				}
				return rows.Err()
			}()
			if err != nil {
				return err
			}
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
		return nil
	})
	return out, err
}

func u64p(v sql.NullInt64) *uint64 {
	if !v.Valid {
		return nil
	}
	u := uint64(v.Int64)
	return &u
}

func i64p(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	i := v.Int64
	return &i
}

// Sessions returns every session, oldest first.
func (s *Store) Sessions(ctx context.Context) ([]record.Session, error) {
	var out []record.Session
	err := s.read(ctx, "query sessions", func(r *rtx) error {
		rows, err := r.tx.QueryContext(r.ctx, `SELECT id, pid, binary, go_version, patterns, start_ns, end_ns, calls_recorded, calls_lost, exit_reason,
			agent_pid, agent_start, boot_id, errors_lost_by_function FROM sessions ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ss record.Session
			var id, pid, rec, lost, apid, astart int64
			var errsLost string
			if err := rows.Scan(&id, &pid, &ss.Binary, &ss.GoVersion, &ss.Patterns, &ss.Start, &ss.End, &rec, &lost, &ss.ExitReason,
				&apid, &astart, &ss.BootID, &errsLost); err != nil {
				return err
			}
			ss.ID, ss.PID, ss.CallsRecorded, ss.CallsLost = uint64(id), uint32(pid), uint64(rec), uint64(lost)
			ss.AgentPID, ss.AgentStart = uint32(apid), uint64(astart)
			if ss.ErrorsLost, err = parseLost(errsLost); err != nil {
				return fmt.Errorf("session %d: errors_lost_by_function: %w", id, err)
			}
			out = append(out, ss)
		}
		return rows.Err()
	})
	return out, err
}
