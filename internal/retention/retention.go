// Package retention expires old hours of an obs-agent store.
//
// A pass drops every hour whose partitions ended at or before now - window,
// whole tables at a time (never a DELETE of the hour's rows from a shared
// table: docs/performance.md has ~30 ms of writer stall for a 1M-row hour's
// DROP against over a second for DELETE). The drop's transaction renames
// the big tables, and they are dropped after it, one table per
// transaction (store.EmptyTrash).
// With an ArchiveDir, each hour is first copied into its own store file,
// DIR/obs-YYYYMMDDHH.db, readable with `obs-agent query ... --db FILE`.
//
// # An hour is dropped only when its archive verifiably holds it
//
// While an ArchiveDir is set, an hour is dropped only after an archive this
// store wrote holds exactly its rows:
//
//   - The archive gets a name nothing in the directory uses:
//     obs-YYYYMMDDHH.db, or obs-YYYYMMDDHH-1.db, -2 ... when that is taken
//     (another store archiving into the same directory, late rows of an
//     hour dropped before, a file or a link someone else put there). An
//     existing file is never reused, overwritten or written through, and
//     the final rename is renameat2(RENAME_NOREPLACE).
//   - Files are created through internal/safefile: no link is followed and
//     the directory must be one no other user can swap names in.
//   - The archive's fingerprint (rows per partition and sums of their
//     identifying columns, store.Fingerprint) is read back from the file and
//     compared with the hour's, summed on a read snapshot outside the write
//     lock. The transaction that drops the hour then checks, in O(1), that
//     the hour's write generations (raised by every transaction that
//     inserts into it, in any process) are still those of the snapshot, so
//     a row written to the hour after the copy stops the drop: the short
//     archive, which this pass just created, is removed and the hour
//     archived again (up to three times, then the hour is kept and the pass
//     fails).
//   - retention_log's archive column names the file that holds the rows.
//
// # Crash safety
//
// Every step can be interrupted by kill -9 and is redone by the next pass:
//
//  1. retention_log gets an "archiving" intent row for the hour, naming the
//     archive file it is going to write.
//  2. The archive is written to FILE.tmp (a fresh store, created
//     exclusively, plus a copy of the hour), fsynced, renamed to FILE and the
//     directory fsynced. The next pass removes a FILE.tmp its intent names.
//  3. The removal of the hour's four partitions (DROP TABLE, or for the
//     big calls partition and the side tables a rename to trash whose pages
//     store.EmptyTrash drops afterwards, a table per transaction), of their catalog
//     rows, and the "dropped" row of retention_log commit in one
//     transaction: either the hour is gone and logged, or it is intact.
//     Trash a crash left is emptied by the next pass.
//
// After a crash between 2 and 3 the next pass drops the hour against the
// FILE its intent names, if FILE's fingerprint equals the hour's; otherwise
// (a crash before the rename, and someone else took the name since) it
// leaves FILE alone and archives the hour again under a new name.
//
// # Space
//
// Pages freed by a drop go to SQLite's freelist and are reused by the next
// hours, so a store in steady state needs no vacuum. The store is created
// with auto_vacuum=INCREMENTAL, and a pass returns free pages to the file
// system with PRAGMA incremental_vacuum only when both hold: writes have
// been quiet for QuietFor (default 10s) and the freelist is at least
// VacuumMinFree (default 25%) of the file and VacuumMinPages (default 256
// pages, 4 MiB). It vacuums in steps of VacuumStep pages (default 512,
// 8 MiB, a few ms of write lock each) and stops as soon as a write happens.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/store"
)

// Defaults for the zero Manager fields.
const (
	DefaultWindow   = 6 * time.Hour
	DefaultInterval = 60 * time.Second
)

// Manager expires the hours of one store.
type Manager struct {
	Store      *store.Store
	Window     time.Duration // data kept; default 6h
	Interval   time.Duration // time between passes in Run; default 60s
	ArchiveDir string        // when set, hours are archived here before the drop
	Clock      func() time.Time
	Logger     *slog.Logger

	QuietFor       time.Duration // vacuum only after this long without writes; default 10s
	VacuumMinFree  float64       // vacuum only when free pages >= this share of the file; default 0.25
	VacuumStep     int           // pages per incremental_vacuum step; default 512
	VacuumMinPages int64         // and only when at least this many pages are free; default 256 (4 MiB of 16 KiB pages)

	// hook, when set (tests), is called after each step of a pass with the
	// step's name; the crash tests kill the process there.
	hook func(step string)
}

// PassResult says what one pass did.
type PassResult struct {
	Dropped  []time.Time // hours dropped
	Archives []string    // archive files written
	Cleaned  []string    // half-written archives removed (left by a crash)
	Vacuumed int64       // pages returned to the file system
}

func (m *Manager) clock() time.Time {
	if m.Clock != nil {
		return m.Clock()
	}
	return time.Now()
}

func (m *Manager) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default().With("component", "retention")
}

func (m *Manager) step(name string) {
	if m.hook != nil {
		m.hook(name)
	}
}

// Run runs a pass with Window every Interval until ctx ends. Errors are
// logged and the next pass retries.
func (m *Manager) Run(ctx context.Context) error {
	interval := m.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := m.Pass(ctx, m.Window)
		switch {
		case err != nil && ctx.Err() == nil:
			m.logger().Error("retention pass failed", "err", err)
		case len(res.Dropped) > 0 || res.Vacuumed > 0:
			m.logger().Info("retention pass", "dropped_hours", len(res.Dropped), "archives", len(res.Archives), "vacuumed_pages", res.Vacuumed)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ArchiveName is the file an hour is archived to.
func ArchiveName(hour time.Time) string {
	return "obs-" + hour.UTC().Format("2006010215") + ".db"
}

// Pass drops every hour whose end is at or before now - olderThan
// (olderThan <= 0 means Window), archiving it first when ArchiveDir is set,
// then reclaims space if writes are quiet. It finishes or redoes whatever a
// crashed pass left.
func (m *Manager) Pass(ctx context.Context, olderThan time.Duration) (PassResult, error) {
	var res PassResult
	if m.Store == nil {
		return res, errors.New("retention: no store")
	}
	if olderThan <= 0 {
		olderThan = m.Window
	}
	if olderThan <= 0 {
		olderThan = DefaultWindow
	}
	cutoff := m.clock().Add(-olderThan)
	var ad *safefile.Dir
	if m.ArchiveDir != "" {
		var err error
		if ad, err = safefile.MkdirAll(m.ArchiveDir); err != nil {
			return res, fmt.Errorf("retention: archive directory: %w", err)
		}
		defer ad.Close()
	}
	// Tables an interrupted drop left to be emptied (store.EmptyTrash).
	if _, _, err := m.Store.EmptyTrash(ctx); err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	hours, err := m.Store.Hours(ctx)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	logged := map[int64]store.RetentionEntry{}
	if entries, err := m.Store.RetentionLog(ctx); err == nil {
		for _, e := range entries {
			logged[e.Hour.UnixNano()] = e
		}
	}
	for _, h := range hours {
		if h.Add(time.Hour).After(cutoff) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if ad == nil {
			if err := m.Store.DropHour(ctx, h, ""); err != nil {
				return res, fmt.Errorf("retention: %w", err)
			}
		} else if err := m.archiveAndDrop(ctx, ad, h, logged[h.UnixNano()], &res); err != nil {
			return res, err
		}
		m.step("dropped")
		res.Dropped = append(res.Dropped, h)
	}
	// Free the pages of the tables the drops renamed, in short steps
	// (store.EmptyTrash), so the vacuum below can return them.
	if _, _, err := m.Store.EmptyTrash(ctx); err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	n, err := m.vacuum(ctx)
	res.Vacuumed = n
	return res, err
}

// archiveAttempts bounds how often a pass archives one hour again when
// rows reached the hour between the copy and the drop.
const archiveAttempts = 3

// archiveAndDrop archives the hour and drops it only once the archive is
// verified to hold exactly its rows (see package comment).
func (m *Manager) archiveAndDrop(ctx context.Context, ad *safefile.Dir, h time.Time, prev store.RetentionEntry, res *PassResult) error {
	if prev.State == "archiving" && prev.Archive != "" && filepath.Dir(prev.Archive) == ad.Path() {
		// A pass stopped between its intent and its drop. Its temporary
		// file is ours (the name was free when the intent was logged):
		// remove it. Its archive, if the rename happened, is used when it
		// holds exactly the hour's rows; anything else at that name is left
		// alone and the hour is archived again under a new name.
		name := filepath.Base(prev.Archive)
		if ad.Exists(name + tmpSuffix) {
			if err := removeArchive(ad, name+tmpSuffix); err != nil {
				return fmt.Errorf("retention: remove half-written archive: %w", err)
			}
			res.Cleaned = append(res.Cleaned, prev.Archive+tmpSuffix)
		}
		if fp, err := m.verify(ctx, ad, name, h); err == nil {
			err = m.Store.DropHourIf(ctx, h, prev.Archive, fp)
			if err == nil {
				m.logger().Debug("dropped hour", "hour", h.Format(time.RFC3339), "archive", prev.Archive)
				return nil
			}
			if !errors.Is(err, store.ErrArchiveMismatch) {
				return fmt.Errorf("retention: %w", err)
			}
			m.logger().Warn("an earlier pass's archive does not hold the hour's rows; archiving the hour again", "archive", prev.Archive, "err", err)
		}
	}
	var lastErr error
	for range archiveAttempts {
		name, id, err := m.archive(ctx, ad, h)
		if err != nil {
			return err
		}
		path := filepath.Join(ad.Path(), name)
		res.Archives = append(res.Archives, path)
		fp, err := m.verify(ctx, ad, name, h)
		if err == nil {
			err = m.Store.DropHourIf(ctx, h, path, fp)
			if err == nil {
				m.logger().Debug("dropped hour", "hour", h.Format(time.RFC3339), "archive", path)
				return nil
			}
		}
		if !errors.Is(err, store.ErrArchiveMismatch) {
			return fmt.Errorf("retention: %w", err)
		}
		// Rows reached the hour after the copy: this archive is short.
		// It is the file this pass just created (same inode), so it is
		// removed and the hour archived again.
		lastErr = err
		res.Archives = res.Archives[:len(res.Archives)-1]
		if st, serr := ad.Lstat(name); serr == nil && st.Dev == id.Dev && st.Ino == id.Ino {
			if err := removeArchive(ad, name); err != nil {
				return fmt.Errorf("retention: %w", err)
			}
		}
	}
	return fmt.Errorf("retention: hour %s kept: it changed while it was archived, %d times: %w", h.Format(time.RFC3339), archiveAttempts, lastErr)
}

// tmpSuffix names an archive being written: FILE.tmp becomes FILE by a
// rename once complete.
const tmpSuffix = ".tmp"

// archiveName picks the first name for the hour's archive that nothing in
// the directory uses, neither as an archive nor as its temporary file:
// obs-YYYYMMDDHH.db, then obs-YYYYMMDDHH-1.db and so on. Another store
// archiving into the same directory, a file someone created or a link
// someone planted there is never reused or written through.
func archiveName(ad *safefile.Dir, h time.Time) (string, error) {
	base := strings.TrimSuffix(ArchiveName(h), ".db")
	for i := range maxArchiveNames {
		name := base + ".db"
		if i > 0 {
			name = fmt.Sprintf("%s-%d.db", base, i)
		}
		taken := ad.Exists(name) || ad.Exists(name+tmpSuffix)
		for _, sfx := range store.Sidecars {
			taken = taken || ad.Exists(name+tmpSuffix+sfx)
		}
		if !taken {
			return name, nil
		}
	}
	return "", fmt.Errorf("retention: %d archive names for hour %s are taken in %s", maxArchiveNames, h.Format(time.RFC3339), ad.Path())
}

const maxArchiveNames = 1000

// archive writes the hour to a new file, crash-safely: the intent is
// logged with the file's name, the copy goes to FILE.tmp, created
// exclusively, which is fsynced and renamed to FILE only if FILE still does
// not exist. It returns the name and the file's identity.
func (m *Manager) archive(ctx context.Context, ad *safefile.Dir, h time.Time) (string, fileID, error) {
	name, err := archiveName(ad, h)
	if err != nil {
		return "", fileID{}, err
	}
	path := filepath.Join(ad.Path(), name)
	tmp := name + tmpSuffix
	tmpPath := path + tmpSuffix
	if err := m.Store.LogRetention(ctx, h, "archiving", path); err != nil {
		return "", fileID{}, fmt.Errorf("retention: %w", err)
	}
	m.step("intent")
	a, err := store.Open(tmpPath, store.Options{Clock: m.Clock, Exclusive: true})
	if err != nil {
		return "", fileID{}, fmt.Errorf("retention: create archive: %w", err)
	}
	if err := a.Close(); err != nil {
		removeArchive(ad, tmp)
		return "", fileID{}, fmt.Errorf("retention: create archive: %w", err)
	}
	m.step("tmp-created")
	if err := m.Store.CopyHourTo(ctx, h, tmpPath); err != nil {
		removeArchive(ad, tmp)
		return "", fileID{}, fmt.Errorf("retention: %w", err)
	}
	for _, sfx := range store.Sidecars {
		if err := ad.Remove(tmp + sfx); err != nil {
			return "", fileID{}, fmt.Errorf("retention: archive: %w", err)
		}
	}
	m.step("archive-written")
	st, err := ad.Lstat(tmp)
	if err != nil {
		return "", fileID{}, fmt.Errorf("retention: archive: %w", err)
	}
	if err := ad.RenameNoReplace(tmp, name); err != nil {
		removeArchive(ad, tmp)
		return "", fileID{}, fmt.Errorf("retention: archive (the name was taken meanwhile; the next pass picks another): %w", err)
	}
	if err := ad.Sync(); err != nil {
		return "", fileID{}, fmt.Errorf("retention: archive: %w", err)
	}
	m.step("archive-renamed")
	return name, fileID{Dev: st.Dev, Ino: st.Ino}, nil
}

type fileID struct{ Dev, Ino uint64 }

// verify checks that name is a regular file of root's (or the effective
// user's) and returns the fingerprint of the hour it holds.
func (m *Manager) verify(ctx context.Context, ad *safefile.Dir, name string, h time.Time) (store.Fingerprint, error) {
	f, err := ad.Open(name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	f.Close()
	fp, err := store.ArchiveFingerprint(ctx, filepath.Join(ad.Path(), name), h)
	if err != nil {
		return nil, err
	}
	if len(fp) == 0 {
		return nil, fmt.Errorf("%w: %s holds no partition of the hour", store.ErrArchiveMismatch, name)
	}
	return fp, nil
}

// removeArchive removes an archive file this store wrote and its sidecars.
func removeArchive(ad *safefile.Dir, name string) error {
	errs := []error{ad.Remove(name)}
	for _, sfx := range store.Sidecars {
		errs = append(errs, ad.Remove(name+sfx))
	}
	return errors.Join(errs...)
}

// vacuum returns free pages to the file system when writes are quiet and
// the freelist is large; see the package comment.
func (m *Manager) vacuum(ctx context.Context) (int64, error) {
	quiet := m.QuietFor
	if quiet <= 0 {
		quiet = 10 * time.Second
	}
	minFree := m.VacuumMinFree
	if minFree <= 0 {
		minFree = 0.25
	}
	step := m.VacuumStep
	if step <= 0 {
		step = 512
	}
	var done int64
	for {
		last := m.Store.LastWrite()
		if !last.IsZero() && time.Since(last) < quiet {
			return done, nil
		}
		free, total, err := m.Store.Freelist(ctx)
		if err != nil {
			return done, fmt.Errorf("retention: %w", err)
		}
		minPages := m.VacuumMinPages
		if minPages <= 0 {
			minPages = 256
		}
		if total == 0 || float64(free) < minFree*float64(total) || free < minPages {
			return done, nil
		}
		if err := ctx.Err(); err != nil {
			return done, nil
		}
		if err := m.Store.IncrementalVacuum(ctx, step); err != nil {
			return done, fmt.Errorf("retention: %w", err)
		}
		after, _, err := m.Store.Freelist(ctx)
		if err != nil {
			return done, fmt.Errorf("retention: %w", err)
		}
		if after >= free {
			return done, nil
		}
		done += free - after
		m.step("vacuumed")
	}
}
