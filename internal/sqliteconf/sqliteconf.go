// Package sqliteconf owns the process-wide configuration of SQLite
// (modernc.org/sqlite), which must be set before SQLite is initialised:
// it makes the mutex of each database connection a no-op, keeping every
// other SQLite mutex real. Importing it is enough; internal/store does, so
// every binary that opens a store has it. (Statement journals are kept in
// memory per connection instead, by the writer's temp_store pragma:
// internal/store's openWriter.)
//
// # Connection mutexes
//
// modernc.org/sqlite opens every connection SQLITE_OPEN_FULLMUTEX, so
// every call into a connection (each sqlite3_bind_*, step, reset, column
// read, ...) enters and leaves that connection's recursive mutex
// (db->mutex). On Linux, modernc's libc implements a pthread mutex as a
// lookup in a sharded map guarded by a Go mutex followed by a second Go
// mutex; in obs-agent's writer that was about a sixth of all the CPU spent
// storing a call (BenchmarkWriteCalls's profile), most of it binding the
// seven parameters of each row.
//
// That mutex protects nothing for obs-agent. It only serialises two threads
// using one connection at the same time, and that never happens here:
// database/sql never hands one driver connection to two goroutines at once
// (driver.Conn's contract), and modernc documents that two goroutines using
// one connection corrupt memory anyway, because the driver's own state and
// the libc.TLS every call runs on are used before SQLite's mutex is
// reached. The one thing modernc's driver does to a connection from
// another goroutine, sqlite3_interrupt when a context is done, is a single
// atomic store that takes no mutex. Each connection still hands over
// between goroutines through database/sql's own locks, which order the
// memory accesses.
//
// # Which mutexes stay real
//
// Only the mutexes that belong to one connection become no-ops. These are
// the SQLITE_MUTEX_RECURSIVE allocations made once SQLite is initialised.
// In the SQLite this module is built with (modernc.org/sqlite/lib, the
// linux/amd64 and linux/arm64 sources alike) there are three
// SQLITE_MUTEX_RECURSIVE allocations:
//
//   - openDatabase: db->mutex, the connection's mutex. This is the one made
//     a no-op.
//   - sqlite3Initialize: the init mutex (sqlite3GlobalConfig.pInitMutex),
//     allocated, used and freed inside sqlite3_initialize. install runs
//     sqlite3_initialize with the methods real (not yet armed), and once
//     SQLite is initialised it never allocates that mutex again: every
//     later sqlite3_initialize returns early. If anything called
//     sqlite3_shutdown, xMutexEnd disarms first, so a new initialisation
//     gets a real init mutex again (and later connections real mutexes).
//   - sqlite3rbu_create_vfs: the mutex of an RBU VFS, which several
//     connections share. obs-agent never creates one (neither does
//     modernc's database/sql driver); a program that did would have to
//     leave this package out.
//
// Every other mutex stays real: the static ones (STATIC_MAIN, MEM, OPEN,
// PRNG, LRU, PMEM, VFS1..3: global state, the page cache group that all
// connections share, the unix VFS's list of open files) and the
// SQLITE_MUTEX_FAST ones (each unix inode's lock mutex and each WAL
// index's shm mutex, shared by every connection to the file; a shared-cache
// BtShared; a shared memdb). SQLite code that reaches another connection's
// db->mutex exists only for the backup API (sqlite3_backup_* enters the
// source and the destination connections' mutexes) and shared-cache
// unlock notification (under STATIC_MAIN); obs-agent uses neither, and a
// backup would again be driven by the one goroutine holding both
// connections.
//
// TestConnMutexNoop checks that a connection's mutex is the no-op and that
// static and fast mutexes still exclude; internal/store's
// TestConcurrentStoreRace runs readers, the writer, the builder and
// checkpoints on one store at once under -race.
package sqliteconf

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// defaults are SQLite's own mutex methods (pthread, through libc),
	// which every mutex but a connection's keeps using.
	defaults sqlite3.Sqlite3_mutex_methods
	// methods are the methods installed: defaults with alloc, free,
	// enter, try, leave and end wrapped.
	methods sqlite3.Sqlite3_mutex_methods

	defEnd   func(*libc.TLS) int32
	defAlloc func(*libc.TLS, int32) uintptr
	defFree  func(*libc.TLS, uintptr)
	defEnter func(*libc.TLS, uintptr)
	defTry   func(*libc.TLS, uintptr) int32
	defLeave func(*libc.TLS, uintptr)

	// armed says whether a new SQLITE_MUTEX_RECURSIVE allocation gets the
	// no-op mutex. It is set only once SQLite is initialised.
	armed atomic.Bool

	// noopMutex's address is the no-op mutex: SQLite only stores it and
	// hands it back to the methods below, which never dereference it.
	noopMutex [8]byte
	noop      = uintptr(unsafe.Pointer(&noopMutex))

	installErr error
)

func init() {
	installErr = install()
}

// Err says why SQLite could not be configured, or nil when it is. When it
// is not nil, SQLite runs with its own mutexes, all real, and its default
// statement journal spill, as it would without this package.
func Err() error { return installErr }

// SetConnMutexNoop arms or disarms the no-op connection mutex for the
// connections opened from now on (connections already open keep theirs).
// Both states are safe; BenchmarkWriteOldNew uses it to measure both in
// one run. It returns the previous state.
func SetConnMutexNoop(on bool) bool {
	if installErr != nil {
		return false
	}
	return armed.Swap(on)
}

// IsNoop reports whether m is the no-op mutex (for tests).
func IsNoop(m uintptr) bool { return m == noop }

// install runs in init, before any connection can be open (this package's
// importers open them only after their own init): it initialises SQLite
// with its default methods to learn them (SQLITE_CONFIG_GETMUTEX reads
// them only while SQLite is not initialised, and they are installed by the
// first sqlite3_initialize), shuts it down again, installs the wrapped
// methods, initialises SQLite with them and only then arms the no-op.
// sqlite3_shutdown also clears the automatic extensions; none is
// registered this early (modernc's own init registers only the
// database/sql driver).
func install() error {
	tls := libc.NewTLS()
	defer tls.Close()
	if rc := sqlite3.Xsqlite3_initialize(tls); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("sqlite: initialize: %s", errstr(tls, rc))
	}
	if rc := sqlite3.Xsqlite3_shutdown(tls); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("sqlite: shutdown to configure mutexes: %s", errstr(tls, rc))
	}
	if rc := config(tls, sqlite3.SQLITE_CONFIG_GETMUTEX, uintptr(unsafe.Pointer(&defaults))); rc != sqlite3.SQLITE_OK {
		return reinit(tls, fmt.Errorf("sqlite: read mutex methods: %s", errstr(tls, rc)))
	}
	d := &defaults
	if d.FxMutexEnd == 0 || d.FxMutexAlloc == 0 || d.FxMutexFree == 0 || d.FxMutexEnter == 0 || d.FxMutexTry == 0 || d.FxMutexLeave == 0 {
		return reinit(tls, fmt.Errorf("sqlite: default mutex methods incomplete"))
	}
	defEnd = *(*func(*libc.TLS) int32)(unsafe.Pointer(&d.FxMutexEnd))
	defAlloc = *(*func(*libc.TLS, int32) uintptr)(unsafe.Pointer(&d.FxMutexAlloc))
	defFree = *(*func(*libc.TLS, uintptr))(unsafe.Pointer(&d.FxMutexFree))
	defEnter = *(*func(*libc.TLS, uintptr))(unsafe.Pointer(&d.FxMutexEnter))
	defTry = *(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&d.FxMutexTry))
	defLeave = *(*func(*libc.TLS, uintptr))(unsafe.Pointer(&d.FxMutexLeave))

	methods = defaults // xMutexInit, xMutexHeld and xMutexNotheld as they are
	methods.FxMutexEnd = *(*uintptr)(unsafe.Pointer(&struct{ f func(*libc.TLS) int32 }{mutexEnd}))
	methods.FxMutexAlloc = *(*uintptr)(unsafe.Pointer(&struct {
		f func(*libc.TLS, int32) uintptr
	}{mutexAlloc}))
	methods.FxMutexFree = *(*uintptr)(unsafe.Pointer(&struct{ f func(*libc.TLS, uintptr) }{mutexFree}))
	methods.FxMutexEnter = *(*uintptr)(unsafe.Pointer(&struct{ f func(*libc.TLS, uintptr) }{mutexEnter}))
	methods.FxMutexTry = *(*uintptr)(unsafe.Pointer(&struct {
		f func(*libc.TLS, uintptr) int32
	}{mutexTry}))
	methods.FxMutexLeave = *(*uintptr)(unsafe.Pointer(&struct{ f func(*libc.TLS, uintptr) }{mutexLeave}))
	if rc := config(tls, sqlite3.SQLITE_CONFIG_MUTEX, uintptr(unsafe.Pointer(&methods))); rc != sqlite3.SQLITE_OK {
		return reinit(tls, fmt.Errorf("sqlite: install mutex methods: %s", errstr(tls, rc)))
	}
	if rc := sqlite3.Xsqlite3_initialize(tls); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("sqlite: initialize with mutex methods: %s", errstr(tls, rc))
	}
	armed.Store(true)
	return nil
}

// reinit initialises SQLite again with whatever methods it has (its
// defaults when configuring failed) and returns err.
func reinit(tls *libc.TLS, err error) error {
	if rc := sqlite3.Xsqlite3_initialize(tls); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("%w; initialize again: %s", err, errstr(tls, rc))
	}
	return err
}

// config calls sqlite3_config(op, arg) for an op taking one argument (a
// pointer as uintptr, or an int32).
func config(tls *libc.TLS, op int32, arg any) int32 {
	va := libc.Xmalloc(tls, 8)
	if va == 0 {
		return sqlite3.SQLITE_NOMEM
	}
	defer libc.Xfree(tls, va)
	return sqlite3.Xsqlite3_config(tls, op, libc.VaList(va, arg))
}

func errstr(tls *libc.TLS, rc int32) string {
	return fmt.Sprintf("%s (%d)", libc.GoString(sqlite3.Xsqlite3_errstr(tls, rc)), rc)
}

// mutexEnd runs in sqlite3_shutdown: from then on a recursive mutex is
// real again, the init mutex of the next sqlite3_initialize included.
func mutexEnd(tls *libc.TLS) int32 {
	armed.Store(false)
	return defEnd(tls)
}

func mutexAlloc(tls *libc.TLS, id int32) uintptr {
	if id == sqlite3.SQLITE_MUTEX_RECURSIVE && armed.Load() {
		return noop
	}
	return defAlloc(tls, id)
}

func mutexFree(tls *libc.TLS, p uintptr) {
	if p != noop {
		defFree(tls, p)
	}
}

func mutexEnter(tls *libc.TLS, p uintptr) {
	if p != noop {
		defEnter(tls, p)
	}
}

func mutexTry(tls *libc.TLS, p uintptr) int32 {
	if p == noop {
		return sqlite3.SQLITE_OK
	}
	return defTry(tls, p)
}

func mutexLeave(tls *libc.TLS, p uintptr) {
	if p != noop {
		defLeave(tls, p)
	}
}
