package store

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// callsPerStmt is the number of rows in one multi-row INSERT (measured, see
// docs/performance.md): 100
// rows per statement is where modernc's per-statement overhead stops
// mattering; 1100 bound parameters stay below SQLite's 32766 limit.
const callsPerStmt = 100

const callCols = 11

// wtx is one write transaction on the writer connection. Cache changes made
// inside it (new partitions, new function ids) are applied only on commit,
// so a rolled-back batch leaves the caches as they were.
type wtx struct {
	s        *Store
	ctx      context.Context
	newParts []string
	newFuncs []string
	// onCommit runs after a successful commit, still under the write
	// lock, so the writer's caches change together with the database.
	onCommit []func()
}

// write runs fn in one BEGIN IMMEDIATE transaction on the writer connection
// and classifies its error. On any error the transaction is rolled back.
func (s *Store) write(op string, fn func(tx *wtx) error) error {
	return s.writeTx(op, true, fn)
}

// writeTx is write; track says whether the transaction counts as data
// written for LastWrite (retention's own drops and log rows don't).
func (s *Store) writeTx(op string, track bool, fn func(tx *wtx) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	ctx := context.Background()
	tx := &wtx{s: s, ctx: ctx}
	if _, err := s.wc.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return explain(op, s.path, classify(op, err))
	}
	err := fn(tx)
	if err == nil {
		_, err = s.wc.ExecContext(ctx, "COMMIT")
	}
	if err != nil {
		// SQLite may already have rolled back (SQLITE_FULL, IOERR);
		// a failing ROLLBACK then only says so.
		_, _ = s.wc.ExecContext(ctx, "ROLLBACK")
		for _, n := range tx.newFuncs {
			delete(s.funcIDs, n)
		}
		return explain(op, s.path, classify(op, err))
	}
	s.walFresh.Store(false)
	for _, p := range tx.newParts {
		s.known[p] = true
	}
	for _, f := range tx.onCommit {
		f()
	}
	if track {
		s.lastWrite.Store(time.Now().UnixNano())
	}
	// Only data writes wait for the checkpointer under the lock: a
	// background step (build, drop, trash; track false) would add that
	// wait to what the writer waits for it, so it waits between its steps
	// instead, without the lock (yieldToCheckpoint).
	if track && s.walOver.Load() {
		t0 := time.Now()
		s.awaitCheckpoint(ctx)
		if ckptWaitHook != nil {
			ckptWaitHook(time.Since(t0))
		}
	}
	return nil
}

// ckptWaitHook, when set (BenchmarkWALFlood), gets how long each
// awaitCheckpoint held the writer.
var ckptWaitHook func(time.Duration)

// awaitCheckpoint has the checkpointer checkpoint now, between two
// transactions of the only writer, and waits for it at most ckptWait
// (walLimit): a checkpoint that copies every frame before the writer's
// next transaction lets that transaction start the WAL over. The writer
// holds its lock meanwhile, so no other write appends frames either.
func (s *Store) awaitCheckpoint(ctx context.Context) {
	if benchWriterCheckpoint {
		_, _ = s.wc.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
		return
	}
	s.checkpointNow(ctx, ckptWait)
}

// checkpointNow has the checkpointer checkpoint now and waits for it, at
// most wait in all (when the checkpointer is still busy with the last
// one, the caller asks again later), or until ctx is done.
func (s *Store) checkpointNow(ctx context.Context, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	done := make(chan struct{})
	select {
	case s.ckptKick <- done:
	case <-t.C:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// yieldToCheckpoint is the background steps' share of bounding the WAL:
// while the checkpointer finds the WAL past walLimit, it has it checkpoint
// and waits for that, without the write lock, so the writer may go on
// meanwhile; the next transaction then starts the WAL over. It gives up
// after maxYield, and returns early when ctx is done.
func (s *Store) yieldToCheckpoint(ctx context.Context) {
	if s.walOver.Load() && s.ckptKick != nil {
		s.checkpointNow(ctx, maxYield)
	}
}

// maxYield bounds how long a background step waits for a checkpoint
// (yieldToCheckpoint).
const maxYield = 2 * time.Second

// leaveRestartToWriter keeps a background step from being the transaction
// that starts the WAL over. SQLite syncs the new WAL header when it starts
// the WAL over, even under synchronous=NORMAL (unsynced, frames written out
// of order before a power loss could replay stale pages), and that fsync
// waits for the disk: one took 246 ms inside a build step on this VM while
// the checkpointer and other tenants kept the disk busy (perf, during
// BenchmarkLockHolds). Whoever holds the lock meanwhile holds the writer
// up. So while the WAL is fully checkpointed (walFresh), a background step
// waits, without the lock, for the next data write to start it over, at
// most restartWait: with no writer writing there is nobody to hold up.
// (Another process's writes are not seen here; the wait then just ends.)
func (s *Store) leaveRestartToWriter(ctx context.Context) {
	if !s.walFresh.Load() {
		return
	}
	deadline := time.NewTimer(restartWait)
	defer deadline.Stop()
	poll := time.NewTicker(restartPoll)
	defer poll.Stop()
	for s.walFresh.Load() {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-poll.C:
		}
	}
}

// restartWait bounds leaveRestartToWriter's wait: a little more than the
// agent's queue takes at most to flush a batch (queue FlushEvery, 200 ms).
// restartPoll is how often it looks.
const (
	restartWait = 250 * time.Millisecond
	restartPoll = 2 * time.Millisecond
)

// exec runs a statement on the writer connection.
func (tx *wtx) exec(q string, args ...any) (sql.Result, error) {
	return tx.s.wc.ExecContext(tx.ctx, q, args...)
}

// stmt returns the cached prepared statement for q.
func (tx *wtx) stmt(q string) (*sql.Stmt, error) {
	if st, ok := tx.s.stmts[q]; ok {
		return st, nil
	}
	st, err := tx.s.wc.PrepareContext(tx.ctx, q)
	if err != nil {
		return nil, err
	}
	tx.s.stmts[q] = st
	return st, nil
}

// ensureHour creates the four partitions of hour unless they are known to
// exist, together with their catalog rows. It also creates the partitions
// of the clock's current and next hour, so the writer normally finds its
// tables ready; records that fall elsewhere (late records, clock moves) get
// their hour created on demand.
func (tx *wtx) ensureHour(hour time.Time) error {
	now := tx.s.clock().UTC().Truncate(time.Hour)
	for _, h := range []time.Time{hour, now, now.Add(time.Hour)} {
		if err := tx.createHour(h); err != nil {
			return err
		}
	}
	return nil
}

func (tx *wtx) createHour(hour time.Time) error {
	if tx.s.known[tableName(KindCalls, hour)] {
		return nil
	}
	for _, n := range tx.newParts {
		if n == tableName(KindCalls, hour) {
			return nil
		}
	}
	now := tx.s.clock().UnixNano()
	for _, kind := range Kinds {
		t := tableName(kind, hour)
		for _, q := range partitionDDL("main", kind, t) {
			if _, err := tx.exec(q); err != nil {
				return fmt.Errorf("create partition %s: %w", t, err)
			}
		}
		if _, err := tx.exec(`INSERT OR IGNORE INTO partitions (name, kind, start_ns, end_ns, created_ns, rows) VALUES (?, ?, ?, ?, ?, ?)`,
			t, kind, hour.UnixNano(), hour.Add(time.Hour).UnixNano(), now, initialRows(kind)); err != nil {
			return err
		}
		if _, err := tx.exec(`INSERT OR IGNORE INTO partition_writes (name, gen) VALUES (?, 0)`, t); err != nil {
			return err
		}
		if kind == KindCalls {
			if err := tx.createLiveSides(t, hour); err != nil {
				return fmt.Errorf("create partition %s: %w", t, err)
			}
		}
		tx.newParts = append(tx.newParts, t)
	}
	return nil
}

// wrote records, in the inserting transaction, that rows were inserted
// into partition table: its write generation goes up by one. Every insert
// into a partition comes here, so DropHourIf can tell with one lookup
// whether an hour changed since it summed its rows, whichever process
// wrote.
func (tx *wtx) wrote(table string) error {
	st, err := tx.stmt(`INSERT INTO partition_writes (name, gen) VALUES (?, 1)
		ON CONFLICT (name) DO UPDATE SET gen = gen + 1`)
	if err != nil {
		return err
	}
	if _, err := st.ExecContext(tx.ctx, table); err != nil {
		return fmt.Errorf("count writes of %s: %w", table, err)
	}
	return nil
}

// funcID returns the id of a function name, registering it (with the package
// derived from the name and an unknown module) when it is new.
func (tx *wtx) funcID(name string) (int64, error) {
	if id, ok := tx.s.funcIDs[name]; ok {
		return id, nil
	}
	return tx.upsertFunction(record.Function{Name: name, Package: record.PackageOf(name)}, false)
}

func (tx *wtx) upsertFunction(fn record.Function, overwrite bool) (int64, error) {
	q := `INSERT INTO functions (name, package, module) VALUES (?, ?, ?)
		ON CONFLICT (name) DO NOTHING`
	if overwrite {
		q = `INSERT INTO functions (name, package, module) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET
			package = CASE WHEN excluded.package != '' THEN excluded.package ELSE package END,
			module = CASE WHEN excluded.module != '' THEN excluded.module ELSE module END`
	}
	st, err := tx.stmt(q)
	if err != nil {
		return 0, err
	}
	if _, err := st.ExecContext(tx.ctx, fn.Name, fn.Package, fn.Module); err != nil {
		return 0, fmt.Errorf("register function %s: %w", fn.Name, err)
	}
	var id int64
	if err := tx.s.wc.QueryRowContext(tx.ctx, `SELECT id FROM functions WHERE name = ?`, fn.Name).Scan(&id); err != nil {
		return 0, err
	}
	if _, ok := tx.s.funcIDs[fn.Name]; !ok {
		tx.newFuncs = append(tx.newFuncs, fn.Name)
	}
	tx.s.funcIDs[fn.Name] = id
	return id, nil
}

// RegisterFunctions records the functions' packages and modules. It is
// idempotent: a known name keeps its id, and its package and module are
// updated when the new values are not empty. WriteCalls registers unknown
// names on its own (package from the name, module unknown), so calling this
// first is what gives `query groups` its modules.
func (s *Store) RegisterFunctions(fns []record.Function) error {
	if len(fns) == 0 {
		return nil
	}
	return s.write("register functions", func(tx *wtx) error {
		for _, fn := range fns {
			if fn.Package == "" {
				fn.Package = record.PackageOf(fn.Name)
			}
			if _, err := tx.upsertFunction(fn, true); err != nil {
				return err
			}
		}
		return nil
	})
}

// BeginSession inserts a session row and returns its new id (>= 1). The id
// field of sess is ignored.
func (s *Store) BeginSession(sess record.Session) (uint64, error) {
	var id int64
	err := s.write("begin session", func(tx *wtx) error {
		res, err := tx.exec(`INSERT INTO sessions (pid, binary, go_version, patterns, start_ns, end_ns, calls_recorded, calls_lost, exit_reason, agent_pid, agent_start, boot_id,
			retention_ns, archive_dir)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			int64(sess.PID), sess.Binary, sess.GoVersion, sess.Patterns, sess.Start, sess.End,
			int64(sess.CallsRecorded), int64(sess.CallsLost), sess.ExitReason,
			int64(sess.AgentPID), int64(sess.AgentStart), sess.BootID,
			int64(sess.Retention), sess.ArchiveDir)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	return uint64(id), err
}

// EndSession stores End, the counts, the errors lost and ExitReason of the
// session sess.ID.
func (s *Store) EndSession(sess record.Session) error {
	return s.write("end session", func(tx *wtx) error {
		res, err := tx.exec(`UPDATE sessions SET end_ns = ?, calls_recorded = ?, calls_lost = ?, exit_reason = ?,
			errors_lost = ?, errors_lost_by_function = ? WHERE id = ?`,
			sess.End, int64(sess.CallsRecorded), int64(sess.CallsLost), sess.ExitReason,
			int64(sess.ErrorsLostTotal()), lostJSON(sess.ErrorsLost), int64(sess.ID))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("session %d: %w", sess.ID, ErrNotFound)
		}
		return nil
	})
}

// splitByHour groups records by the hour of key, keeping their order.
// The common case (all in one hour) returns the input without copying.
func splitByHour[T any](recs []T, key func(*T) int64) ([]time.Time, [][]T) {
	first := hourOf(key(&recs[0]))
	same := true
	for i := range recs {
		if !hourOf(key(&recs[i])).Equal(first) {
			same = false
			break
		}
	}
	if same {
		return []time.Time{first}, [][]T{recs}
	}
	var hours []time.Time
	var groups [][]T
	idx := map[int64]int{}
	for i := range recs {
		h := hourOf(key(&recs[i]))
		j, ok := idx[h.Unix()]
		if !ok {
			j = len(hours)
			idx[h.Unix()] = j
			hours = append(hours, h)
			groups = append(groups, nil)
		}
		groups[j] = append(groups[j], recs[i])
	}
	return hours, groups
}

func insertSQL(table string, cols int, rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(table)
	b.WriteString(" VALUES ")
	row := "(" + strings.Repeat("?,", cols-1) + "?)"
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	return b.String()
}

// WriteCalls stores a batch of calls in one transaction, each in the hour
// partition of its Start, with multi-row prepared INSERTs of 100 rows. On
// error nothing of the batch is stored; the error matches ErrLocked,
// ErrReadOnly, ErrDiskFull or ErrCorrupt when it is one of those, so the
// caller can spill the batch and retry it as is. Call ids must be unique in
// the store; a duplicate id fails the whole batch.
func (s *Store) WriteCalls(calls []record.Call) error {
	if len(calls) == 0 {
		return nil
	}
	err := s.writeCalls(calls)
	if errors.Is(err, errRowidDrift) {
		// Nothing of the batch is stored, and the writer binds every
		// id from now on (rowidTail): write it again.
		err = s.writeCalls(calls)
	}
	return err
}

func (s *Store) writeCalls(calls []record.Call) error {
	return s.write("write calls", func(tx *wtx) error {
		if !benchFullRows {
			calls = tx.s.inIDOrder(calls)
			defer tx.s.clearSorted()
		}
		hours, groups := splitByHour(calls, func(c *record.Call) int64 { return c.Start })
		for i, h := range hours {
			if err := tx.ensureHour(h); err != nil {
				return err
			}
			table := tableName(KindCalls, h)
			fids, err := tx.insertCalls(table, groups[i])
			if err != nil {
				return err
			}
			if err := tx.addRows(table, len(groups[i])); err != nil {
				return err
			}
			if benchOldWrite {
				continue
			}
			if err := tx.wrote(table); err != nil {
				return err
			}
			if err := tx.maintainCalls(table, h, groups[i], fids); err != nil {
				return err
			}
		}
		return nil
	})
}

// inIDOrder returns calls sorted by id: calls itself when it is, else a
// sorted copy in a buffer of the store's (clearSorted empties it after
// the batch). The agent's batches are not in id order: ids are taken when
// a call enters, records are sent when it returns (a parent after its
// children), and the queue puts the batch's errors first. Rows inserted
// behind the right edge of the calls partition's b-tree land in full
// pages, each split in two by SQLite's balance_nonroot; appended in id
// order they fill one page after another (balance_quick). Sorting 5,000
// ids costs less than the splits it avoids (BenchmarkWriteOldNew,
// OBS_BENCH_ORDER=agent).
func (s *Store) inIDOrder(calls []record.Call) []record.Call {
	sorted := true
	for i := 1; i < len(calls); i++ {
		if calls[i].ID < calls[i-1].ID {
			sorted = false
			break
		}
	}
	if sorted {
		return calls
	}
	if out, ok := s.placeByID(calls); ok {
		return out
	}
	keys := s.sortKeys[:0]
	for i := range calls {
		keys = append(keys, sortKey{calls[i].ID, i})
	}
	slices.SortFunc(keys, func(a, b sortKey) int { return cmp.Compare(a.id, b.id) })
	s.sortKeys = keys
	out := s.sorted[:0]
	for _, k := range keys {
		out = append(out, calls[k.i])
	}
	s.sorted = out
	return out
}

// placeByID is inIDOrder's usual path: a batch's ids lie in a short range
// (a session's ids rise by one a call, and the queue hands over calls
// that returned at about the same time), so each call is placed at its
// id's offset from the smallest in a table of the range, which is then
// read in order: O(range) with no comparisons. On an agent-like batch of
// 5,000 (BenchmarkInIDOrder, one run on the loaded 2-core VM) it took
// 28-31 ns a record against 130-145 for the comparison sort, copies
// included. ok is false, and nothing is changed,
// when the range is more than 4 times the batch or two calls share an id.
func (s *Store) placeByID(calls []record.Call) (_ []record.Call, ok bool) {
	lo, hi := calls[0].ID, calls[0].ID
	for i := range calls {
		lo, hi = min(lo, calls[i].ID), max(hi, calls[i].ID)
	}
	span := hi - lo
	if span >= 4*uint64(len(calls)) {
		return nil, false
	}
	slots := s.slots[:0]
	for range span + 1 {
		slots = append(slots, -1)
	}
	s.slots = slots
	for i := range calls {
		d := calls[i].ID - lo
		if slots[d] >= 0 {
			return nil, false
		}
		slots[d] = int32(i)
	}
	out := s.sorted[:0]
	for _, i := range slots {
		if i >= 0 {
			out = append(out, calls[i])
		}
	}
	s.sorted = out
	return out, true
}

// sortKey is a call's id and its index in the batch (inIDOrder).
type sortKey struct {
	id uint64
	i  int
}

// clearSorted drops the records inIDOrder copied (they hold strings) and
// keeps the buffer.
func (s *Store) clearSorted() {
	clear(s.sorted)
	s.sorted = s.sorted[:0]
}

// benchBefore, set only by BenchmarkWriteOldNew, makes WriteCalls bind
// its rows through the driver, as before rawwrite.go (the benchmark also
// opens that path's stores with real connection mutexes, see
// internal/sqliteconf).
var benchBefore bool

// benchOldWrite, set only by BenchmarkWriteOldNew, makes WriteCalls
// insert the rows only, as it did before the read structures (schema 3),
// so one run can measure what keeping them costs the writer.
var benchOldWrite bool

// benchExplicitIDs, set only by BenchmarkWriteOldNew, makes the raw path
// bind every call id and insert the other rows as before rowidTail.
var benchExplicitIDs bool

// insertCalls inserts the rows and returns their function ids, in the
// order of calls.
//
// Most rows are ok calls, whose last four columns are constants (status
// 0, no error type or text, not truncated). They go through statements
// that write those constants as literals and bind 7 parameters a row
// instead of 11: binding was about a quarter of the writer's CPU, each
// parameter one call into SQLite that took the connection's mutex
// (modernc opens every connection SQLITE_OPEN_FULLMUTEX; internal/sqliteconf
// now makes that mutex a no-op, and insertCallsRaw binds without the
// driver). The other rows
// (errors, panics, unfinished calls) go through statements with all 11
// columns. This split is made when fewer than one row in splitBelow is
// of the other kinds; otherwise all rows take the full shape, in order.
// Each kind is collected into its own statement, run when full and at the
// end of the batch: 100 ok rows, and 10 other rows while ok rows are
// pending (100 otherwise). The other rows are thus inserted a
// little behind the right edge of the table's b-tree, where a full page
// is split; at 20% errors, statements of 100 such rows left the calls
// 11% larger than in id order and gained nothing, statements of 10 left
// them 6% larger and were 6% faster (BenchmarkWriteOldNew, 2 runs).
// insertCallsRaw inserts 10 or more other rows only right after a
// statement of ok rows, so that the ok rows pending are not left behind
// them and still append (rowidTail).
func (tx *wtx) insertCalls(table string, calls []record.Call) ([]int64, error) {
	// The rows are bound through the driver directly (sql.Conn.Raw):
	// database/sql's per-argument checks and conversions cost ~15% of a
	// batch at 1,100 arguments per statement.
	fids := make([]int64, len(calls))
	return fids, tx.s.wc.Raw(func(dc any) error {
		pc, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return fmt.Errorf("sqlite driver connection %T cannot prepare", dc)
		}
		okArgs, fullArgs := tx.s.okArgs[:0], tx.s.nargs[:0]
		defer func() {
			// Keep the argument buffers for the next batch, cleared:
			// they hold this batch's strings.
			clear(okArgs[:cap(okArgs)])
			clear(fullArgs[:cap(fullArgs)])
			tx.s.okArgs, tx.s.nargs = okArgs[:0], fullArgs[:0]
		}()
		// With many other rows, splitting gains nothing: every row
		// takes the full shape, in order, as before.
		var others int
		for i := range calls {
			if !plainOK(&calls[i]) {
				others++
			}
		}
		split := others*splitBelow < len(calls) && !benchFullRows
		if !benchBefore {
			if w := tx.s.rawWriterFor(dc); w != nil {
				return tx.insertCallsRaw(w, pc, table, calls, fids, split)
			}
		}
		var err error
		for i := range calls {
			c := &calls[i]
			if fids[i], err = tx.funcIDRaw(pc, c.Function); err != nil {
				return err
			}
			var parent any
			if c.ParentID != 0 {
				parent = int64(c.ParentID)
			}
			okShape := split && plainOK(c)
			args := &fullArgs
			if okShape {
				args = &okArgs
			}
			*args = append(*args,
				driver.NamedValue{Value: int64(c.ID)},
				driver.NamedValue{Value: parent},
				driver.NamedValue{Value: int64(c.PID)},
				driver.NamedValue{Value: int64(c.GoID)},
				driver.NamedValue{Value: fids[i]},
				driver.NamedValue{Value: c.Start},
				driver.NamedValue{Value: c.Duration},
			)
			if okShape {
				if len(okArgs) == callsPerStmt*okCols {
					if err := tx.execRows(pc, table, true, okArgs); err != nil {
						return err
					}
					okArgs = okArgs[:0]
				}
				continue
			}
			var etype, emsg any
			if c.ErrorType != "" {
				etype = c.ErrorType
			}
			if c.Error != "" {
				emsg = c.Error
			}
			trunc := int64(0)
			if c.ErrorTruncated {
				trunc = 1
			}
			fullArgs = append(fullArgs,
				driver.NamedValue{Value: int64(c.Status)},
				driver.NamedValue{Value: etype},
				driver.NamedValue{Value: emsg},
				driver.NamedValue{Value: trunc},
			)
			// Among ok rows, 10 at a time, so they land near the
			// right edge; in a batch of such rows only (a journal
			// replay, an error flood), 100 at a time.
			if len(fullArgs) == callsPerStmt*callCols || (len(okArgs) > 0 && len(fullArgs) == 10*callCols) {
				if err := tx.execRows(pc, table, false, fullArgs); err != nil {
					return err
				}
				fullArgs = fullArgs[:0]
			}
		}
		if err := tx.execRows(pc, table, true, okArgs); err != nil {
			return err
		}
		return tx.execRows(pc, table, false, fullArgs)
	})
}

// insertCallsRaw is insertCalls's loop on the writer's SQLite handle
// (rawwrite.go): the same rows through the same statements in the same
// order, each value bound with one sqlite3_bind_* call.
func (tx *wtx) insertCallsRaw(w *rawWriter, pc driver.ConnPrepareContext, table string, calls []record.Call, fids []int64, split bool) error {
	okRows, othRows := tx.s.okRows[:0], tx.s.othRows[:0]
	defer func() { tx.s.okRows, tx.s.othRows = okRows[:0], othRows[:0] }()
	tail, err := w.tail(table)
	if err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	if benchExplicitIDs {
		tail.max = -1
	}
	flush := func(okShape bool, rows []int) error {
		if len(rows) == 0 {
			return nil
		}
		cols := callCols
		if okShape {
			cols = okCols
		}
		err := w.execRows(len(rows), cols, func(n int) string { return tx.s.callsSQL(table, okShape, n) },
			func(st *rawStmt, r, base int) error {
				return w.bindCall(st, base, &calls[rows[r]], fids[rows[r]], okShape, &tail)
			})
		if err == nil && tail.max >= 0 {
			err = w.checkTail(int64(calls[rows[len(rows)-1]].ID))
		}
		if err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
		return nil
	}
	for i := range calls {
		c := &calls[i]
		var err error
		if fids[i], err = tx.funcIDRaw(pc, c.Function); err != nil {
			return err
		}
		if split && plainOK(c) {
			if okRows = append(okRows, i); len(okRows) == callsPerStmt {
				if err := flush(true, okRows); err != nil {
					return err
				}
				okRows = okRows[:0]
				// The other rows collected lie behind the ok rows just
				// inserted: 10 or more go in now, near the right edge.
				if len(othRows) >= 10 && !benchExplicitIDs {
					if err := flush(false, othRows); err != nil {
						return err
					}
					othRows = othRows[:0]
				}
			}
			continue
		}
		// Only once the ok rows before them are in (above), so those
		// ok rows still append (rowidTail); and 100 at most.
		othRows = append(othRows, i)
		if len(othRows) == callsPerStmt || (benchExplicitIDs && len(okRows) > 0 && len(othRows) == 10) {
			if err := flush(false, othRows); err != nil {
				return err
			}
			othRows = othRows[:0]
		}
	}
	if err := flush(true, okRows); err != nil {
		return err
	}
	return flush(false, othRows)
}

// bindCall binds the row of c from parameter base+1 on: its okCols
// columns, and the other four too unless okShape; its id NULL when the
// row appends to the table (see rowidTail).
func (w *rawWriter) bindCall(st *rawStmt, base int, c *record.Call, fid int64, okShape bool, tail *rowidTail) error {
	for _, err := range [...]error{
		w.bindID(st, base+1, int64(c.ID), tail),
		w.bindIntOrNull(st, base+2, int64(c.ParentID)),
		w.bindInt(st, base+3, int64(c.PID)),
		w.bindInt(st, base+4, int64(c.GoID)),
		w.bindInt(st, base+5, fid),
		w.bindInt(st, base+6, c.Start),
		w.bindInt(st, base+7, c.Duration),
	} {
		if err != nil {
			return err
		}
	}
	if okShape {
		return nil
	}
	trunc := int64(0)
	if c.ErrorTruncated {
		trunc = 1
	}
	for _, err := range [...]error{
		w.bindInt(st, base+8, int64(c.Status)),
		w.bindTextOrNull(st, base+9, c.ErrorType),
		w.bindTextOrNull(st, base+10, c.Error),
		w.bindInt(st, base+11, trunc),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// okCols is the number of bound columns of an ok row (see insertCalls).
const okCols = 7

// splitBelow: insertCalls gives ok rows statements of their own when
// fewer than one row in splitBelow is another kind. Measured
// (BenchmarkWriteOldNew, batches in id order, CPU time): at 1% errors the
// split path was 1.10 times as fast as all rows in the full shape, at 20%
// 0.95-1.06 (the other rows, inserted behind the right edge, split pages);
// 10% is between the two.
const splitBelow = 10

// plainOK reports whether c is an ok call with no error text or flag: the
// rows whose last four columns are constants.
func plainOK(c *record.Call) bool {
	return c.Status == record.StatusOK && c.ErrorType == "" && c.Error == "" && !c.ErrorTruncated
}

// benchFullRows, set only by BenchmarkWriteOldNew, makes WriteCalls
// insert the rows in the order given and bind all 11 columns of every
// row, as it did before it sorted batches and ok rows had statements of
// their own.
var benchFullRows bool

// execRows inserts the rows of args (okCols or callCols values a row, by
// okShape) into table, in statements of rowsPerStmt rows.
func (tx *wtx) execRows(pc driver.ConnPrepareContext, table string, okShape bool, args []driver.NamedValue) error {
	cols := callCols
	if okShape {
		cols = okCols
	}
	if err := tx.execChunks(pc, cols, args, func(n int) string { return tx.s.callsSQL(table, okShape, n) }); err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	return nil
}

// execChunks runs the rows of args, cols values a row, through the
// prepared statements q(n) of n = rowsPerStmt rows each.
func (tx *wtx) execChunks(pc driver.ConnPrepareContext, cols int, args []driver.NamedValue, q func(n int) string) error {
	for len(args) > 0 {
		n := rowsPerStmt(len(args) / cols)
		st, err := tx.rawStmt(pc, q(n))
		if err != nil {
			return err
		}
		batch := args[:n*cols]
		for i := range batch {
			batch[i].Ordinal = i + 1
		}
		if _, err := st.(driver.StmtExecContext).ExecContext(tx.ctx, batch); err != nil {
			return err
		}
		args = args[n*cols:]
	}
	return nil
}

// callsSQL returns the INSERT of n rows into the calls partition table,
// of ok rows (okCols bound values a row, the rest literals) or full rows.
// The texts of the table being written are kept: building a
// 1,100-parameter statement's text for every execution, only to find its
// prepared statement, cost 3% of a batch.
func (s *Store) callsSQL(table string, okShape bool, n int) string {
	if s.sqlTable != table {
		s.sqlTable, s.sqlTexts = table, map[[2]int]string{}
	}
	k := [2]int{n, 0}
	if okShape {
		k[1] = 1
	}
	if q, ok := s.sqlTexts[k]; ok {
		return q
	}
	var q string
	if okShape {
		row := "(?,?,?,?,?,?,?,0,NULL,NULL,0)"
		q = "INSERT INTO " + table + " VALUES " + strings.Repeat(row+",", n-1) + row
	} else {
		q = insertSQL(table, callCols, n)
	}
	s.sqlTexts[k] = q
	return q
}

// rowsPerStmt is the number of rows of the next multi-row INSERT when left
// rows remain: callsPerStmt while there are as many, then 10, then 1, so
// only three statement shapes per table are prepared and cached.
func rowsPerStmt(left int) int {
	switch {
	case left >= callsPerStmt:
		return callsPerStmt
	case left >= 10:
		return 10
	}
	return 1
}

// rawStmt returns the cached driver statement for q, preparing it on pc.
func (tx *wtx) rawStmt(pc driver.ConnPrepareContext, q string) (driver.Stmt, error) {
	if st, ok := tx.s.dstmts[q]; ok {
		return st, nil
	}
	st, err := pc.PrepareContext(tx.ctx, q)
	if err != nil {
		return nil, err
	}
	tx.s.dstmts[q] = st
	return st, nil
}

// funcIDRaw is funcID for use inside a Raw callback: a new name is
// registered through the driver connection.
func (tx *wtx) funcIDRaw(pc driver.ConnPrepareContext, name string) (int64, error) {
	if id, ok := tx.s.funcIDs[name]; ok {
		return id, nil
	}
	ec, ok := pc.(driver.ExecerContext)
	if !ok {
		return 0, fmt.Errorf("sqlite driver connection %T cannot exec", pc)
	}
	if _, err := ec.ExecContext(tx.ctx, `INSERT INTO functions (name, package, module) VALUES (?, ?, '') ON CONFLICT (name) DO NOTHING`,
		[]driver.NamedValue{{Ordinal: 1, Value: name}, {Ordinal: 2, Value: record.PackageOf(name)}}); err != nil {
		return 0, fmt.Errorf("register function %s: %w", name, err)
	}
	qc, ok := pc.(driver.QueryerContext)
	if !ok {
		return 0, fmt.Errorf("sqlite driver connection %T cannot query", pc)
	}
	rows, err := qc.QueryContext(tx.ctx, `SELECT id FROM functions WHERE name = ?`, []driver.NamedValue{{Ordinal: 1, Value: name}})
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil {
		return 0, fmt.Errorf("register function %s: %w", name, err)
	}
	id, ok := dest[0].(int64)
	if !ok {
		return 0, fmt.Errorf("register function %s: id is %T", name, dest[0])
	}
	tx.newFuncs = append(tx.newFuncs, name)
	tx.s.funcIDs[name] = id
	return id, nil
}

// encodeHist packs a histogram as uvarints with trailing zero buckets cut.
func encodeHist(h *[record.HistBuckets]uint64) []byte {
	last := -1
	for i := range h {
		if h[i] != 0 {
			last = i
		}
	}
	buf := make([]byte, 0, (last+1)*2)
	for i := 0; i <= last; i++ {
		buf = binary.AppendUvarint(buf, h[i])
	}
	return buf
}

// decodeHist adds an encoded histogram into h.
func decodeHist(b []byte, h *[record.HistBuckets]uint64) error {
	for i := 0; len(b) > 0; i++ {
		v, n := binary.Uvarint(b)
		if n <= 0 || i >= record.HistBuckets {
			return fmt.Errorf("%w: bad histogram encoding", ErrCorrupt)
		}
		h[i] += v
		b = b[n:]
	}
	return nil
}

// WriteStats stores per-function aggregates, each in the hour of its
// IntervalStart, in one transaction.
func (s *Store) WriteStats(st []record.FuncStats) error {
	if len(st) == 0 {
		return nil
	}
	return s.write("write stats", func(tx *wtx) error {
		hours, groups := splitByHour(st, func(r *record.FuncStats) int64 { return r.IntervalStart })
		for i, h := range hours {
			if err := tx.ensureHour(h); err != nil {
				return err
			}
			table := tableName(KindStats, h)
			ins, err := tx.stmt(insertSQL(table, 13, 1))
			if err != nil {
				return err
			}
			fids := make([]int64, len(groups[i]))
			for j := range groups[i] {
				r := &groups[i][j]
				fid, err := tx.funcID(r.Function)
				if err != nil {
					return err
				}
				fids[j] = fid
				if _, err := ins.ExecContext(tx.ctx, int64(r.PID), fid, r.IntervalStart, r.IntervalEnd,
					int64(r.Calls), int64(r.Errors), int64(r.Panics), int64(r.Recorded), int64(r.Sampled),
					int64(r.Dropped), int64(r.TotalNs), int64(r.MaxNs), encodeHist(&r.Hist)); err != nil {
					return fmt.Errorf("insert into %s: %w", table, err)
				}
			}
			if err := tx.addRows(table, len(groups[i])); err != nil {
				return err
			}
			if err := tx.wrote(table); err != nil {
				return err
			}
			if err := tx.maintainRollup(table, groups[i], fids); err != nil {
				return err
			}
		}
		return nil
	})
}

func nullable[T any](p *T) any {
	if p == nil {
		return nil
	}
	switch v := any(*p).(type) {
	case uint64:
		return int64(v)
	default:
		return v
	}
}

// WriteSamples stores resource samples, each in the hour of its Time. A nil
// field is stored as NULL (unavailable), never as zero.
func (s *Store) WriteSamples(rs []record.ResourceSample) error {
	if len(rs) == 0 {
		return nil
	}
	return s.write("write samples", func(tx *wtx) error {
		hours, groups := splitByHour(rs, func(r *record.ResourceSample) int64 { return r.Time })
		for i, h := range hours {
			if err := tx.ensureHour(h); err != nil {
				return err
			}
			table := tableName(KindSamples, h)
			ins, err := tx.stmt(insertSQL(table, 12, 1))
			if err != nil {
				return err
			}
			for _, r := range groups[i] {
				if _, err := ins.ExecContext(tx.ctx, int64(r.PID), r.Time, nullable(r.CPUPercent),
					nullable(r.RSSBytes), nullable(r.VMSBytes), nullable(r.Threads), nullable(r.OpenFDs),
					nullable(r.ReadBytes), nullable(r.WriteBytes), nullable(r.VolCtxSwitches),
					nullable(r.InvCtxSwitches), nullable(r.Goroutines)); err != nil {
					return fmt.Errorf("insert into %s: %w", table, err)
				}
			}
			if err := tx.addRows(table, len(groups[i])); err != nil {
				return err
			}
			if err := tx.wrote(table); err != nil {
				return err
			}
		}
		return nil
	})
}

// WriteGaps stores probe gaps in the hour of their Start. A gap is keyed by
// (PID, Function, Start): writing it again (for example to set End once the
// probes resume) updates End and Reason.
func (s *Store) WriteGaps(g []record.Gap) error {
	if len(g) == 0 {
		return nil
	}
	return s.write("write gaps", func(tx *wtx) error {
		hours, groups := splitByHour(g, func(r *record.Gap) int64 { return r.Start })
		for i, h := range hours {
			if err := tx.ensureHour(h); err != nil {
				return err
			}
			table := tableName(KindGaps, h)
			ins, err := tx.stmt(`INSERT INTO ` + table + ` (pid, func_id, start_ns, end_ns, reason) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (pid, func_id, start_ns) DO UPDATE SET end_ns = excluded.end_ns, reason = excluded.reason`)
			if err != nil {
				return err
			}
			for _, r := range groups[i] {
				fid, err := tx.funcID(r.Function)
				if err != nil {
					return err
				}
				if _, err := ins.ExecContext(tx.ctx, int64(r.PID), fid, r.Start, r.End, r.Reason); err != nil {
					return fmt.Errorf("insert into %s: %w", table, err)
				}
			}
			if err := tx.wrote(table); err != nil {
				return err
			}
		}
		return nil
	})
}
