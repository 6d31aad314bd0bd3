package store

import (
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/obs-agent/obs-agent/internal/record"
)

// The writer's hot INSERTs (the calls rows and the error lane) run on the
// writer connection's SQLite handle directly instead of through the
// driver's Stmt.Exec. For each statement the driver builds an argument
// finder, asks SQLite each parameter's name, finds the argument, switches
// on its type and only then binds it; with the int64 of every argument
// boxed into an interface first (an allocation each). That was about a
// fifth of the writer's CPU once SQLite's connection mutex was gone
// (internal/sqliteconf): more than the binding itself. rawWriter binds
// each value with one sqlite3_bind_* call into statements it prepares and
// caches itself.
//
// modernc.org/sqlite has no API that hands out a connection's sqlite3*
// handle, so rawHandle reads its driver connection's db field by
// reflection, and checks that the handle is the writer's: SQLite must
// name the store's file as its main database. When the field is missing
// (a driver version that renamed it) or the check fails, the writer uses
// the driver as before; TestRawWriterActive fails then, so an upgrade
// that loses the fast path is seen.
//
// Everything here runs inside the writer's sql.Conn.Raw, under the
// writer's lock: the connection is used by one goroutine at a time, as
// database/sql guarantees for the driver's own calls.

// rawWriter is the writer connection's handle and its prepared statements.
type rawWriter struct {
	tls   *libc.TLS
	db    uintptr
	stmts map[string]*rawStmt
	// use counts statement lookups; a statement unused for rawKeep of
	// them is finalised (see stmt).
	use uint64
	// out is 8 bytes of C memory that sqlite3_prepare_v3 writes the new
	// statement to. Only C memory (and Go globals) is handed to the
	// transpiled SQLite: under -race, checkptr refuses a Go heap pointer
	// that comes back to it as an integer.
	out uintptr
	// noAppend turns appending by NULL rowid (rowidTail) off for the
	// writer's life: set when a rowid did not come out as the call's id.
	noAppend bool
	appended uint64 // rows bound a NULL rowid (tests look)
}

type rawStmt struct {
	p       uintptr
	lastUse uint64
	// bound[i] is the value parameter i holds, when known. SQLite keeps
	// a statement's bindings across sqlite3_reset (and moves them into
	// the statement it prepares again after a schema change), so a value
	// equal to the one bound is not bound again: the pid of every row,
	// the parent and function of many (binding was 9% of the writer's
	// CPU in perf, at 1% errors).
	bound []rawVal
}

// rawVal is a value bound to a parameter: an integer, or NULL.
type rawVal struct {
	v         int64
	set, null bool
}

// rawKeep: statements of tables no longer written (the previous hour's,
// a late record's old hour) are finalised when a statement is prepared
// and that many statement lookups (about 40 batches) have passed without
// them.
const rawKeep = 2000

// rawHandle returns the sqlite3* handle of a modernc.org/sqlite driver
// connection, or 0.
func rawHandle(dc any) uintptr {
	v := reflect.ValueOf(dc)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return 0
	}
	v = v.Elem()
	if v.Kind() != reflect.Struct || v.Type().PkgPath() != "modernc.org/sqlite" {
		return 0
	}
	f := v.FieldByName("db")
	if !f.IsValid() || f.Kind() != reflect.Uintptr {
		return 0
	}
	return uintptr(f.Uint())
}

// rawWriterFor returns the store's rawWriter for the driver connection
// dc, making it on first use; nil when the handle can't be had, in which
// case the writer goes through the driver.
func (s *Store) rawWriterFor(dc any) *rawWriter {
	if s.raw != nil || s.rawOff {
		return s.raw
	}
	db := rawHandle(dc)
	if db == 0 {
		s.rawOff = true
		return nil
	}
	tls := libc.NewTLS()
	main, err := libc.CString("main")
	if err != nil {
		tls.Close()
		s.rawOff = true
		return nil
	}
	name := libc.GoString(sqlite3.Xsqlite3_db_filename(tls, db, main))
	libc.Xfree(tls, main)
	if name != s.path {
		tls.Close()
		s.rawOff = true
		return nil
	}
	out := libc.Xcalloc(tls, 1, 8)
	if out == 0 {
		tls.Close()
		s.rawOff = true
		return nil
	}
	s.raw = &rawWriter{tls: tls, db: db, stmts: map[string]*rawStmt{}, out: out}
	return s.raw
}

// close finalises the statements and frees the writer's memory; it runs
// inside wc.Raw, before the connection closes.
func (w *rawWriter) close() {
	for q, st := range w.stmts {
		sqlite3.Xsqlite3_finalize(w.tls, st.p)
		delete(w.stmts, q)
	}
	libc.Xfree(w.tls, w.out)
	w.tls.Close()
}

// rawError is a failed SQLite call on the raw path. Like the driver's
// *sqlite.Error it has Code(), the extended result code, which classify
// and Refused read.
type rawError struct {
	code int
	msg  string
}

func (e *rawError) Error() string { return e.msg }
func (e *rawError) Code() int     { return e.code }

// err makes the error of result code rc, in the driver's words
// ("errstr: errmsg (code)").
func (w *rawWriter) err(rc int32) error {
	str := libc.GoString(sqlite3.Xsqlite3_errstr(w.tls, rc))
	msg := libc.GoString(sqlite3.Xsqlite3_errmsg(w.tls, w.db))
	if msg == str {
		return &rawError{code: int(rc), msg: fmt.Sprintf("%s (%d)", str, rc)}
	}
	return &rawError{code: int(rc), msg: fmt.Sprintf("%s: %s (%d)", str, msg, rc)}
}

// stmt returns the prepared statement for q, preparing it on first use.
func (w *rawWriter) stmt(q string) (*rawStmt, error) {
	w.use++
	if st, ok := w.stmts[q]; ok {
		st.lastUse = w.use
		return st, nil
	}
	// A new statement: a new table is written (an hour began, a late
	// record came), so those of tables left behind can go.
	for k, st := range w.stmts {
		if w.use-st.lastUse > rawKeep {
			sqlite3.Xsqlite3_finalize(w.tls, st.p)
			delete(w.stmts, k)
		}
	}
	zSQL, err := libc.CString(q)
	if err != nil {
		return nil, err
	}
	defer libc.Xfree(w.tls, zSQL)
	if rc := sqlite3.Xsqlite3_prepare_v3(w.tls, w.db, zSQL, -1, sqlite3.SQLITE_PREPARE_PERSISTENT, w.out, 0); rc != sqlite3.SQLITE_OK {
		return nil, w.err(rc)
	}
	p := uintptr(binary.NativeEndian.Uint64(libc.GoBytes(w.out, 8)))
	if p == 0 {
		return nil, fmt.Errorf("prepare %.40q: empty statement", q)
	}
	n := sqlite3.Xsqlite3_bind_parameter_count(w.tls, p)
	st := &rawStmt{p: p, lastUse: w.use, bound: make([]rawVal, n+1)}
	w.stmts[q] = st
	return st, nil
}

// bindInt binds v as parameter i of st, unless it holds v already.
func (w *rawWriter) bindInt(st *rawStmt, i int, v int64) error {
	b := &st.bound[i]
	if b.set && !b.null && b.v == v && !benchRebind {
		return nil
	}
	b.set = false
	if rc := sqlite3.Xsqlite3_bind_int64(w.tls, st.p, int32(i), v); rc != sqlite3.SQLITE_OK {
		return w.err(rc)
	}
	*b = rawVal{v: v, set: true}
	return nil
}

// bindNull binds NULL as parameter i of st, unless it holds NULL already.
func (w *rawWriter) bindNull(st *rawStmt, i int) error {
	b := &st.bound[i]
	if b.set && b.null && !benchRebind {
		return nil
	}
	b.set = false
	if rc := sqlite3.Xsqlite3_bind_null(w.tls, st.p, int32(i)); rc != sqlite3.SQLITE_OK {
		return w.err(rc)
	}
	*b = rawVal{set: true, null: true}
	return nil
}

// benchRebind, set only by a benchmark, binds every value again.
var benchRebind bool

// The calls rows are inserted with their call id as the rowid (id
// INTEGER PRIMARY KEY), and for a given rowid SQLite first checks that
// the table does not hold it yet (OP_NotExists): a search from the root
// of the table's b-tree, every row. SQLite's shortcut for a search that
// starts where the cursor already is does not apply, because inserting
// a row leaves the cursor without a valid key. That search was about a
// quarter of the writer's CPU (BenchmarkWriteCalls' profile, 1% errors).
//
// A row whose rowid is NULL gets, documented, one more than the largest
// rowid in the table (up to the largest int64, which our ids never come
// near), found from the cursor's last position (BTCF_AtLast) with no
// search, and its uniqueness check then starts from there and takes the
// shortcut. Call ids rise by one per call within a session, and a batch
// is inserted in id order, so most rows are the table's largest rowid
// plus one when they are inserted: those rows are bound NULL and come out
// with exactly their id. A row behind the largest rowid (a call that
// returned late, another session's, an error row of the batch inserted
// after later ok rows) or past a gap of ids is bound its id as before.
//
// rowidTail follows the largest rowid of the table being written, within
// one write transaction (nothing else writes the table meanwhile): read
// from the table once per batch, raised by every row bound. As a guard,
// the rowid of the last row of each statement is compared with its id
// (checkTail); a mismatch fails the batch and turns the NULL rowids off
// (WriteCalls then writes the batch again with every id bound).
type rowidTail struct {
	max int64 // the largest rowid; -1 when unknown (no NULL rowids)
}

// errRowidDrift: a row bound a NULL rowid did not get its call id.
var errRowidDrift = errors.New("a call's rowid came out different from its id")

// tail reads the largest rowid of table into a rowidTail; -1 when the
// writer appends no more, or the table holds a rowid it cannot follow.
func (w *rawWriter) tail(table string) (rowidTail, error) {
	if w.noAppend {
		return rowidTail{max: -1}, nil
	}
	st, err := w.stmt("SELECT max(rowid) FROM " + table)
	if err != nil {
		return rowidTail{}, err
	}
	if rc := sqlite3.Xsqlite3_step(w.tls, st.p); rc != sqlite3.SQLITE_ROW {
		err := w.err(sqlite3.Xsqlite3_extended_errcode(w.tls, w.db))
		sqlite3.Xsqlite3_reset(w.tls, st.p)
		return rowidTail{}, err
	}
	var top int64 // an empty table's NULL rowid is 1
	if sqlite3.Xsqlite3_column_type(w.tls, st.p, 0) != sqlite3.SQLITE_NULL {
		top = sqlite3.Xsqlite3_column_int64(w.tls, st.p, 0)
	}
	if rc := sqlite3.Xsqlite3_reset(w.tls, st.p); rc != sqlite3.SQLITE_OK {
		return rowidTail{}, w.err(rc)
	}
	if top < 0 || top == math.MaxInt64 {
		// At the largest int64 SQLite picks NULL rowids at random.
		return rowidTail{max: -1}, nil
	}
	return rowidTail{max: top + rowidSkew}, nil
}

// rowidSkew, set only by a test, makes tail misjudge the largest rowid,
// so the guard can be seen to work.
var rowidSkew int64

// bindID binds the call id id as parameter i: NULL when it is one more
// than t's largest rowid, id itself otherwise.
func (w *rawWriter) bindID(st *rawStmt, i int, id int64, t *rowidTail) error {
	if t.max < 0 {
		return w.bindInt(st, i, id)
	}
	next := t.max + 1
	if t.max = max(t.max, id); t.max == math.MaxInt64 {
		t.max = -1
	}
	if id != next {
		return w.bindInt(st, i, id)
	}
	w.appended++
	return w.bindNull(st, i)
}

// checkTail is the guard of rowidTail: the last row inserted must have
// its call id, last, as its rowid. On a mismatch the writer stops
// binding NULL rowids.
func (w *rawWriter) checkTail(last int64) error {
	if got := sqlite3.Xsqlite3_last_insert_rowid(w.tls, w.db); got != last {
		w.noAppend = true
		return fmt.Errorf("%w: call %d stored as row %d", errRowidDrift, last, got)
	}
	return nil
}

// bindIntOrNull binds v, or NULL when v is 0 (a call without a parent).
func (w *rawWriter) bindIntOrNull(st *rawStmt, i int, v int64) error {
	if v == 0 {
		return w.bindNull(st, i)
	}
	return w.bindInt(st, i, v)
}

// bindTextOrNull binds s, or NULL when s is empty.
func (w *rawWriter) bindTextOrNull(st *rawStmt, i int, s string) error {
	if s == "" {
		return w.bindNull(st, i)
	}
	// Copied to C memory, as the driver does; SQLITE_TRANSIENT (-1) has
	// SQLite copy it again before it returns, so it is freed at once.
	p, err := libc.CString(s)
	if err != nil {
		return err
	}
	st.bound[i].set = false
	rc := sqlite3.Xsqlite3_bind_text64(w.tls, st.p, int32(i), p, uint64(len(s)), ^uintptr(0), sqlite3.SQLITE_UTF8)
	libc.Xfree(w.tls, p)
	if rc != sqlite3.SQLITE_OK {
		return w.err(rc)
	}
	return nil
}

// run steps st once (an INSERT) and resets it; on failure the error is
// the step's.
func (w *rawWriter) run(st *rawStmt) error {
	rc := sqlite3.Xsqlite3_step(w.tls, st.p)
	if rc == sqlite3.SQLITE_DONE || rc == sqlite3.SQLITE_ROW {
		if rc := sqlite3.Xsqlite3_reset(w.tls, st.p); rc != sqlite3.SQLITE_OK {
			return w.err(rc)
		}
		return nil
	}
	err := w.err(sqlite3.Xsqlite3_extended_errcode(w.tls, w.db))
	sqlite3.Xsqlite3_reset(w.tls, st.p)
	return err
}

// execRows inserts rows rows, cols values a row, through the prepared
// statements q(n) of n = rowsPerStmt rows each; bind binds row r's values
// from parameter base+1 on.
func (w *rawWriter) execRows(rows, cols int, q func(n int) string, bind func(st *rawStmt, r, base int) error) error {
	for r := 0; r < rows; {
		n := rowsPerStmt(rows - r)
		st, err := w.stmt(q(n))
		if err != nil {
			return err
		}
		for j := 0; j < n; j++ {
			if err := bind(st, r+j, j*cols); err != nil {
				return err
			}
		}
		if err := w.run(st); err != nil {
			return err
		}
		r += n
	}
	return nil
}

// insertErrLane inserts the error lane rows (start_ns, id, status) of
// errs through prefix ("INSERT OR IGNORE INTO calls_H__err"), on the raw
// path when the writer has it.
func (tx *wtx) insertErrLane(prefix string, errs []*record.Call) error {
	if len(errs) == 0 {
		return nil
	}
	const cols = 3
	return tx.s.wc.Raw(func(dc any) error {
		var w *rawWriter
		if !benchBefore {
			w = tx.s.rawWriterFor(dc)
		}
		if w == nil {
			pc, ok := dc.(driver.ConnPrepareContext)
			if !ok {
				return fmt.Errorf("sqlite driver connection %T cannot prepare", dc)
			}
			args := make([]driver.NamedValue, 0, cols*len(errs))
			for _, c := range errs {
				args = append(args, driver.NamedValue{Value: c.Start}, driver.NamedValue{Value: int64(c.ID)}, driver.NamedValue{Value: int64(c.Status)})
			}
			return tx.execChunks(pc, cols, args, func(n int) string { return valuesSQL(prefix, cols, n) })
		}
		return w.execRows(len(errs), cols, func(n int) string { return tx.s.laneSQL(prefix, n) },
			func(st *rawStmt, r, base int) error {
				c := errs[r]
				for _, err := range [...]error{
					w.bindInt(st, base+1, c.Start),
					w.bindInt(st, base+2, int64(c.ID)),
					w.bindInt(st, base+3, int64(c.Status)),
				} {
					if err != nil {
						return err
					}
				}
				return nil
			})
	})
}

// laneSQL is valuesSQL(prefix, 3, n), kept for the prefix last asked
// for, like callsSQL.
func (s *Store) laneSQL(prefix string, n int) string {
	if s.laneFor != prefix {
		s.laneFor, s.laneTexts = prefix, map[int]string{}
	}
	q, ok := s.laneTexts[n]
	if !ok {
		q = valuesSQL(prefix, 3, n)
		s.laneTexts[n] = q
	}
	return q
}

// valuesSQL is prefix VALUES with n rows of cols parameters.
func valuesSQL(prefix string, cols, n int) string {
	row := "(" + strings.Repeat("?,", cols-1) + "?)"
	return prefix + " VALUES " + strings.Repeat(row+",", n-1) + row
}
