// Package store keeps obs-agent's records in one SQLite file
// (modernc.org/sqlite, pure Go) in WAL mode with synchronous=NORMAL.
//
// Every time series is partitioned by UTC hour into its own table:
// calls_YYYYMMDDHH, stats_YYYYMMDDHH, samples_YYYYMMDDHH and gaps_YYYYMMDDHH,
// listed in the partitions catalog. Retention drops whole hours with DROP
// TABLE (never DELETE), which costs a writer tens of milliseconds instead of
// seconds. Small tables (schema_version, sessions, functions, partitions,
// retention_log) are not partitioned; calls reference functions by id.
//
// Writes go through one dedicated connection, serialised by a mutex, and each
// Write* call is one transaction: it commits whole or not at all. Reads use a
// separate pool of read-only connections, so queries never block the writer
// (WAL readers see a snapshot).
//
// The package holds the SQL primitives of the reads, a file per table kind
// (calls.go, stats.go, samples.go, gaps.go, sessions.go, partitions.go);
// internal/query composes them into answers. Reads are fast without a
// per-row index on the writer's path thanks to the side structures in
// derived.go, which a writable store builds in the background. Retention
// drops an hour's side structures with it; the small side tables
// (call_ranges, call_spans, derived) lose the hour's few rows by DELETE.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/safefile"
	// Makes each connection's SQLite mutex a no-op before any connection
	// is opened: database/sql never uses a connection from two
	// goroutines at once, and that mutex was a sixth of the writer's CPU.
	_ "github.com/obs-agent/obs-agent/internal/sqliteconf"
)

// Options tune Open.
type Options struct {
	// ReadOnly opens the store for queries only: no writer connection, no
	// schema creation or migration, and a missing file is ErrNoStore.
	ReadOnly bool
	// Clock is the time source used to create partitions ahead of time and
	// to stamp catalog rows. nil means time.Now.
	Clock func() time.Time
	// BusyTimeout is how long a write waits for another connection's lock
	// before failing with ErrLocked. 0 means 5s.
	BusyTimeout time.Duration
	// Exclusive makes a writable Open fail when the file already exists
	// (retention creates each archive as a new file).
	Exclusive bool
	// CacheBytes bounds SQLite's page caches, which live outside the Go
	// heap: the writer connection gets half, the checkpointer and each of
	// the (at most 4) reader connections a tenth. It also sets SQLite's
	// soft heap limit to twice that, past which SQLite frees cache pages.
	// 0 keeps SQLite's defaults (about 2 MB of cache per connection).
	CacheBytes int64
	// NoBackgroundBuild keeps a writable store from building the read
	// structures of closed hours in the background (see BuildDerived),
	// for benchmarks and tests that run the builds themselves.
	NoBackgroundBuild bool
}

// cachePragma returns the cache_size pragma that gives a connection share
// of CacheBytes, or "" for SQLite's default.
func (o Options) cachePragma(share int64) string {
	if o.CacheBytes <= 0 {
		return ""
	}
	kib := max(o.CacheBytes/share/1024, 64)
	return fmt.Sprintf("cache_size(-%d)", kib)
}

// addPragmas adds the memory pragmas of a connection: its cache share and
// no memory-mapped I/O (mapped pages of a large store would be charged to
// the agent's memory without a bound).
func (o Options) addPragmas(v url.Values, share int64) {
	if p := o.cachePragma(share); p != "" {
		v.Add("_pragma", p)
	}
	v.Add("_pragma", "mmap_size(0)")
}

// pageSize is the page size of new stores.
const pageSize = 16384

// Store is one open obs-agent database.
type Store struct {
	path  string
	opts  Options
	clock func() time.Time

	// Writer state, all guarded by wmu. wdb is nil when read-only.
	wmu     sync.Mutex
	wdb     *sql.DB
	wc      *sql.Conn
	known   map[string]bool  // partition tables that exist
	funcIDs map[string]int64 // function name -> id
	stmts   map[string]*sql.Stmt
	dstmts  map[string]driver.Stmt // used only inside wc.Raw
	nargs   []driver.NamedValue    // full rows' arguments, kept between batches
	okArgs  []driver.NamedValue    // ok rows' arguments, kept between batches
	// sqlTable is the calls partition whose INSERT texts sqlTexts holds,
	// by rows and shape (callsSQL).
	sqlTable string
	sqlTexts map[[2]int]string
	sorted   []record.Call // a batch sorted by id (inIDOrder)
	sortKeys []sortKey
	slots    []int32 // placeByID's table of a batch's id range
	// raw binds the hot INSERTs on the writer's SQLite handle
	// (rawwrite.go); rawOff once the handle can't be had.
	raw     *rawWriter
	rawOff  bool
	okRows  []int // indices of a batch's ok rows pending (insertCallsRaw)
	othRows []int // of its other rows
	// laneFor is the error lane INSERT prefix whose texts laneTexts
	// holds, by rows (laneSQL).
	laneFor   string
	laneTexts map[int]string
	closed    bool

	lastWrite atomic.Int64 // Unix ns of the last committed write

	rdb *sql.DB

	ckptStop chan struct{} // closes to stop the checkpointer
	walOver  atomic.Bool   // the checkpointer found the WAL past walLimit
	// walFresh: the checkpointer's last checkpoint copied every frame and
	// nothing has committed since, so the next transaction starts the WAL
	// over (leaveRestartToWriter).
	walFresh atomic.Bool
	// ckptKick asks the checkpointer for a checkpoint now; it closes the
	// channel sent when the checkpoint has ended (awaitCheckpoint).
	ckptKick chan chan struct{}
	ckptDone chan struct{}

	buildStop chan struct{} // closes to stop the background builder
	buildDone chan struct{}
	// ignoreDerived makes reads scan as if no side structure were complete
	// (tests compare both answers).
	ignoreDerived bool

	fmu   sync.Mutex
	funcs map[int64]funcInfo // reader cache of the functions table
}

type funcInfo struct{ name, pkg, module string }

// DefaultPath is the store used when no --db is given:
//   - $OBS_AGENT_DB when set;
//   - /var/lib/obs-agent/obs.db when running as root (euid 0);
//   - otherwise $XDG_STATE_HOME/obs-agent/obs.db, falling back to
//     ~/.local/state/obs-agent/obs.db when XDG_STATE_HOME is unset.
func DefaultPath() string {
	if p := os.Getenv("OBS_AGENT_DB"); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return "/var/lib/obs-agent/obs.db"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "obs-agent", "obs.db")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "obs-agent", "obs.db")
	}
	return filepath.Join(home, ".local", "state", "obs-agent", "obs.db")
}

// dsn builds a SQLite URI for path with the given parameters.
func dsn(path string, params url.Values) string {
	u := url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: params.Encode()}
	return u.String()
}

// Open opens the store at path. A writable Open creates the parent
// directories (0700, or 0750 with a data group) and the file (0600, or
// 0640) when missing, by the rules of internal/safefile, sets
// auto_vacuum=INCREMENTAL on a new file (before any table exists), switches
// to WAL and migrates an older schema. A store with a newer schema is refused
// with ErrNewerSchema.
func Open(path string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{path: abs, opts: opts, clock: opts.Clock}
	if s.clock == nil {
		s.clock = time.Now
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}
	busyPragma := fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds())
	ctx := context.Background()

	if opts.ReadOnly {
		if _, err := os.Stat(abs); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("store: %w at %s", ErrNoStore, abs)
			}
			return nil, classify("open "+abs, err)
		}
	} else {
		d, err := safefile.MkdirAll(filepath.Dir(abs))
		if err != nil {
			return nil, classify("create directory for "+abs, err)
		}
		defer d.Close()
		base := filepath.Base(abs)
		// SQLite opens by path: give it the resolved one, on which no
		// other user can swap a name (see internal/safefile).
		s.path = filepath.Join(d.Path(), base)
		id, err := prepareFiles(d, base, opts.Exclusive)
		if err != nil {
			if derr := dirError("open "+abs, abs, err); derr != nil {
				return nil, derr
			}
			return nil, classify("open "+abs, err)
		}
		if err := s.openWriter(ctx, busyPragma); err != nil {
			s.Close()
			return nil, explain("open "+abs, abs, err)
		}
		if err := checkFiles(d, base, id); err != nil {
			s.Close()
			return nil, classify("open "+abs, err)
		}
	}

	rp := url.Values{}
	rp.Set("mode", "ro")
	rp.Add("_pragma", busyPragma)
	rp.Add("_pragma", "query_only(1)")
	opts.addPragmas(rp, 10)
	s.rdb, err = sql.Open("sqlite", dsn(s.path, rp))
	if err != nil {
		s.Close()
		return nil, classify("open "+abs, err)
	}
	s.rdb.SetMaxOpenConns(4)
	s.rdb.SetMaxIdleConns(4)
	if opts.ReadOnly {
		v, err := readVersion(ctx, s.rdb)
		var se *sqlite.Error
		if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CANTOPEN {
			// A WAL store on a read-only file system or directory: its
			// -shm can't be created. Read it as immutable; a store that
			// was closed cleanly has an empty WAL, so nothing is missed.
			s.rdb.Close()
			rp.Set("immutable", "1")
			if s.rdb, err = sql.Open("sqlite", dsn(s.path, rp)); err != nil {
				return nil, classify("open "+abs, err)
			}
			v, err = readVersion(ctx, s.rdb)
		}
		if err == nil && v == 0 {
			err = fmt.Errorf("%w: %s is an empty database, not an obs-agent store", ErrCorrupt, abs)
		}
		if err == nil && v > SchemaVersion {
			err = newerSchemaError(abs, v)
		}
		if err != nil {
			s.Close()
			return nil, explain("open "+abs, abs, classify("open "+abs, err))
		}
	} else {
		s.startBuilder()
	}
	return s, nil
}

func (s *Store) openWriter(ctx context.Context, busyPragma string) error {
	wp := url.Values{}
	wp.Add("_pragma", busyPragma)
	wp.Add("_pragma", "synchronous(NORMAL)")
	wp.Add("_pragma", "foreign_keys(0)")
	// The writer never checkpoints itself: a background goroutine does,
	// on its own connection, so the copy into the main file and its fsync
	// run on the other core instead of stalling a WriteCalls.
	wp.Add("_pragma", "wal_autocheckpoint(0)")
	// The WAL file is cut back to walKeep times walLimit when it starts
	// over (walKeep).
	wp.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walKeep*walLimit))
	// Statement journals (a multi-row statement's undo) stay in memory
	// whatever their size (SQLite's pager keeps a connection's
	// sub-journals in memory when its temp_store is MEMORY). An INSERT of
	// several rows with explicit ids may abort half done, so SQLite
	// journals each page it first changes; past SQLite's 64 KiB (four of
	// the store's pages) it spilled to a temporary file: every 100-row
	// calls INSERT did (6% of the writer's CPU in pwrite), and a build
	// step's INSERT ... SELECT, which dirties a few MiB of side-table
	// pages, waited up to tens of ms for the disk to write, close and free
	// it inside the write transaction (docs/performance.md, "What the
	// writer waited for").
	wp.Add("_pragma", "temp_store(MEMORY)")
	s.opts.addPragmas(wp, 2)
	if s.opts.CacheBytes > 0 {
		// Process-wide in SQLite: past it, SQLite frees cache pages
		// before it allocates more.
		wp.Add("_pragma", fmt.Sprintf("soft_heap_limit(%d)", 2*s.opts.CacheBytes))
	}
	var err error
	s.wdb, err = sql.Open("sqlite", dsn(s.path, wp))
	if err != nil {
		return classify("open "+s.path, err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wc, err = s.wdb.Conn(ctx)
	if err != nil {
		return classify("open "+s.path, err)
	}
	// auto_vacuum can only be chosen before the first table (or WAL
	// switch) materialises page 1, so set it while the file is empty.
	var pages int64
	if err := s.wc.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return classify("open "+s.path, err)
	}
	if pages == 0 {
		// 16 KiB pages: a DROP TABLE frees (and, under auto_vacuum,
		// maps) a quarter as many pages as with 4 KiB. Measured drop of a
		// 1M-call hour: 66 ms with 4 KiB pages, 42 ms with 16 KiB, write
		// rate unchanged within noise.
		if _, err := s.wc.ExecContext(ctx, fmt.Sprintf("PRAGMA page_size = %d", pageSize)); err != nil {
			return classify("open "+s.path, err)
		}
		if _, err := s.wc.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
			return classify("open "+s.path, err)
		}
	}
	var mode string
	if err := s.wc.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return classify("open "+s.path, err)
	}
	if err := migrate(ctx, s.wc, s.path, SchemaVersion); err != nil {
		return classify("open "+s.path, err)
	}
	if err := s.startCheckpointer(); err != nil {
		return err
	}
	s.known = map[string]bool{}
	s.funcIDs = map[string]int64{}
	s.stmts = map[string]*sql.Stmt{}
	s.dstmts = map[string]driver.Stmt{}
	rows, err := s.wc.QueryContext(ctx, "SELECT name FROM partitions")
	if err != nil {
		return classify("open "+s.path, err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return classify("open "+s.path, err)
		}
		s.known[n] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return classify("open "+s.path, err)
	}
	rows, err = s.wc.QueryContext(ctx, "SELECT id, name FROM functions")
	if err != nil {
		return classify("open "+s.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var n string
		if err := rows.Scan(&id, &n); err != nil {
			return classify("open "+s.path, err)
		}
		s.funcIDs[n] = id
	}
	if err := rows.Err(); err != nil {
		return classify("open "+s.path, err)
	}
	return nil
}

// Path is the absolute path of the store file.
func (s *Store) Path() string { return s.path }

// ReadOnly reports whether the store was opened for queries only.
func (s *Store) ReadOnly() bool { return s.wdb == nil }

// LastWrite is when the last data write (sessions, functions, calls, stats,
// samples, gaps) committed; zero if none since Open. Retention's drops don't
// count.
func (s *Store) LastWrite() time.Time {
	ns := s.lastWrite.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Close closes both pools. With a writer, it first checkpoints the WAL so the
// file is self-contained.
func (s *Store) Close() error {
	// Stop the builder first: it takes wmu for each step.
	if s.buildStop != nil {
		close(s.buildStop)
		<-s.buildDone
		s.buildStop = nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	if s.wc != nil && len(s.dstmts) > 0 {
		_ = s.wc.Raw(func(any) error {
			for _, st := range s.dstmts {
				st.Close()
			}
			return nil
		})
	}
	s.dstmts = nil
	if s.wc != nil && s.raw != nil {
		_ = s.wc.Raw(func(any) error {
			s.raw.close()
			return nil
		})
	}
	s.raw = nil
	if s.ckptStop != nil {
		close(s.ckptStop)
		<-s.ckptDone
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.wc != nil {
		_, _ = s.wc.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)")
		errs = append(errs, s.wc.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	return classify("close", errors.Join(errs...))
}

func (s *Store) writable() error {
	if s.closed {
		return errors.New("store: closed")
	}
	if s.wdb == nil {
		return fmt.Errorf("store: %w: opened with Options.ReadOnly", ErrReadOnly)
	}
	return nil
}

// checkpointEvery is how often the checkpointer runs a PASSIVE checkpoint.
// A variable for tests.
var checkpointEvery = 500 * time.Millisecond

// walLimit bounds the WAL: past it the writer, between two of its
// transactions, has the checkpointer copy what it has not yet copied
// (awaitCheckpoint), and SQLite next starts it over, reusing the file in
// place (it is cut back only past walKeep times walLimit). A variable for
// tests.
//
// PASSIVE checkpoints from another connection do not bound the WAL alone:
// SQLite starts the WAL over only when a write transaction begins after a
// checkpoint copied every frame, and a writer that commits batch after
// batch (a flood) appends frames while each checkpoint copies, so that
// moment never comes. Measured with a writer writing 5,000-call batches
// flat out: the WAL grew for as long as it wrote, to 852 MiB in 40 s,
// three times the store itself. A forced checkpoint from the checkpointer
// (TRUNCATE) does not help either: it waits for the write lock through
// SQLite's busy handler, which polls, and a writer that begins its next
// transaction at once wins every time. So the writer cooperates: past
// walLimit it waits after its commit, with no frame appended meanwhile,
// for a checkpoint of the checkpointer's, at most ckptWait. A reader that
// keeps one snapshot open for long still holds the WAL back until it ends.
var walLimit int64 = 64 << 20

// walKeep is how many times walLimit the WAL file may keep when SQLite
// starts it over (journal_size_limit); a larger file is cut back to that.
// It was walLimit itself, so the WAL was cut back every time it started
// over: the writer's first commit after it truncated tens of MiB inside
// its transaction, which on a file system that frees blocks with a
// synchronous discard (ext4 mounted with -o discard, as on this VM) held
// the lock for up to 105 ms (BenchmarkLockHolds). The WAL rarely passes
// twice walLimit (BenchmarkWALFlood: 66-83 MiB), so with room for four
// times it the file is reused in place and truncated only after an
// exceptional burst, while its size stays bounded.
const walKeep = 4

// ckptWait is the longest the writer waits for the checkpointer once the
// WAL is past walLimit, well under the writer's 50 ms budget for a stall.
// The first checkpoint past the limit may have tens of MiB to copy and
// take longer: the writer then goes on while it copies, and waits again
// after its next transaction, when what is left to copy is about that
// one transaction's frames. It used to run the checkpoint itself, which
// held its next batch for as long as the checkpoint took (up to 180 ms
// under a flood; BenchmarkWALFlood compares both). A variable for tests.
var ckptWait = 20 * time.Millisecond

// benchWriterCheckpoint, set only by BenchmarkWALFlood, makes the writer
// run the checkpoint itself past walLimit, as it did before
// awaitCheckpoint.
var benchWriterCheckpoint bool

// checkpointHook, when set (tests), gets the WAL size each PASSIVE
// checkpoint of the checkpointer found.
var checkpointHook func(walBytes int64)

// startCheckpointer runs PASSIVE WAL checkpoints from a second connection,
// every checkpointEvery and when the writer asks (awaitCheckpoint).
// PASSIVE never waits for the writer or readers; it copies what it can.
// When the WAL holds more than walLimit all the same, it tells the writer
// (walOver), which then asks for a checkpoint after each of its
// transactions until the WAL has started over.
func (s *Store) startCheckpointer() error {
	p := url.Values{}
	s.opts.addPragmas(p, 10)
	db, err := sql.Open("sqlite", dsn(s.path, p))
	if err != nil {
		return classify("open checkpointer", err)
	}
	db.SetMaxOpenConns(1)
	s.ckptStop = make(chan struct{})
	s.ckptDone = make(chan struct{})
	s.ckptKick = make(chan chan struct{})
	go func() {
		defer close(s.ckptDone)
		defer db.Close()
		var pageSize int64
		checkpoint := func() {
			// Errors (busy, disk full) are retried on the next tick; the
			// writer reports its own errors.
			if pageSize == 0 {
				if err := db.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
					return
				}
			}
			var busy, frames, copied int64
			if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
				return
			}
			// A frame is a page and its 24-byte header. frames counts
			// the WAL's frames since it last started over, so the flag
			// stays up until the writer has started it over.
			walBytes := frames * (pageSize + 24)
			s.walOver.Store(walBytes > walLimit)
			s.walFresh.Store(frames >= 0 && copied == frames)
			if checkpointHook != nil {
				checkpointHook(walBytes)
			}
		}
		t := time.NewTicker(checkpointEvery)
		defer t.Stop()
		for {
			select {
			case <-s.ckptStop:
				return
			case done := <-s.ckptKick:
				checkpoint()
				close(done)
			case <-t.C:
				checkpoint()
			}
		}
	}()
	return nil
}
