package sqliteconf

import (
	"database/sql"
	"encoding/binary"
	"testing"

	"modernc.org/libc"
	_ "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// openConn opens an in-memory connection the way modernc's driver does
// (SQLITE_OPEN_FULLMUTEX) and returns its handle.
func openConn(t *testing.T, tls *libc.TLS) uintptr {
	t.Helper()
	name, err := libc.CString(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer libc.Xfree(tls, name)
	pdb := libc.Xcalloc(tls, 1, 8)
	defer libc.Xfree(tls, pdb)
	flags := int32(sqlite3.SQLITE_OPEN_READWRITE | sqlite3.SQLITE_OPEN_CREATE | sqlite3.SQLITE_OPEN_FULLMUTEX)
	if rc := sqlite3.Xsqlite3_open_v2(tls, name, pdb, flags, 0); rc != sqlite3.SQLITE_OK {
		t.Fatalf("open: rc %d", rc)
	}
	db := uintptr(binary.NativeEndian.Uint64(libc.GoBytes(pdb, 8)))
	t.Cleanup(func() { sqlite3.Xsqlite3_close_v2(tls, db) })
	return db
}

// excludes reports whether m, entered on one thread (TLS), refuses a
// second one.
func excludes(t *testing.T, m uintptr) bool {
	t.Helper()
	a, b := libc.NewTLS(), libc.NewTLS()
	defer a.Close()
	defer b.Close()
	sqlite3.Xsqlite3_mutex_enter(a, m)
	rc := sqlite3.Xsqlite3_mutex_try(b, m)
	if rc == sqlite3.SQLITE_OK {
		sqlite3.Xsqlite3_mutex_leave(b, m)
	}
	sqlite3.Xsqlite3_mutex_leave(a, m)
	// Free again: a real mutex must be enterable after the leave.
	if rc2 := sqlite3.Xsqlite3_mutex_try(b, m); rc2 != sqlite3.SQLITE_OK {
		t.Fatalf("mutex still held after leave: rc %d", rc2)
	} else {
		sqlite3.Xsqlite3_mutex_leave(b, m)
	}
	return rc == sqlite3.SQLITE_BUSY
}

func TestConnMutexNoop(t *testing.T) {
	if err := Err(); err != nil {
		t.Fatalf("not installed: %v", err)
	}
	tls := libc.NewTLS()
	defer tls.Close()

	// A connection opened now has the no-op mutex: a second thread enters
	// it while the first holds it.
	db := openConn(t, tls)
	m := sqlite3.Xsqlite3_db_mutex(tls, db)
	if m == 0 || !IsNoop(m) {
		t.Fatalf("connection mutex %#x is not the no-op", m)
	}
	if excludes(t, m) {
		t.Fatal("the no-op connection mutex excluded a second thread")
	}

	// Static mutexes (global state, the page cache group, the unix VFS)
	// stay real.
	for _, id := range []int32{sqlite3.SQLITE_MUTEX_STATIC_MAIN, sqlite3.SQLITE_MUTEX_STATIC_LRU, sqlite3.SQLITE_MUTEX_STATIC_VFS1} {
		s := sqlite3.Xsqlite3_mutex_alloc(tls, id)
		if s == 0 || IsNoop(s) {
			t.Fatalf("static mutex %d: %#x", id, s)
		}
		if !excludes(t, s) {
			t.Fatalf("static mutex %d let a second thread in", id)
		}
	}
	// So do fast mutexes (a unix inode's lock mutex, a WAL index's).
	f := sqlite3.Xsqlite3_mutex_alloc(tls, sqlite3.SQLITE_MUTEX_FAST)
	if f == 0 || IsNoop(f) {
		t.Fatalf("fast mutex: %#x", f)
	}
	if !excludes(t, f) {
		t.Fatal("fast mutex let a second thread in")
	}
	sqlite3.Xsqlite3_mutex_free(tls, f)

	// Disarmed, a new connection gets a real recursive mutex again, and
	// one opened before keeps its no-op.
	prev := SetConnMutexNoop(false)
	defer SetConnMutexNoop(prev)
	db2 := openConn(t, tls)
	m2 := sqlite3.Xsqlite3_db_mutex(tls, db2)
	if m2 == 0 || IsNoop(m2) {
		t.Fatalf("disarmed: connection mutex %#x", m2)
	}
	if !excludes(t, m2) {
		t.Fatal("disarmed: connection mutex let a second thread in")
	}
	if !IsNoop(sqlite3.Xsqlite3_db_mutex(tls, db)) {
		t.Fatal("the first connection's mutex changed")
	}
}

// TestDriverWorks runs SQL through modernc's database/sql driver with the
// no-op connection mutexes: connections open, write, read and close.
func TestDriverWorks(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+t.TempDir()+"/t.db?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)`); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := db.Exec(`INSERT INTO t VALUES (?, ?)`, i, "x"); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 100 {
		t.Fatalf("count %d, %v", n, err)
	}
}
