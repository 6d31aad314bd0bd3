// Package retention expires old hours of an obs-agent store.
//
// A pass drops every hour whose partitions ended at or before now - window,
// whole tables at a time (DROP TABLE, never DELETE: NOTES §6 measured ~30 ms
// of writer stall for a 1M-row hour against over a second for DELETE).
// With an ArchiveDir, each hour is first copied into its own store file,
// DIR/obs-YYYYMMDDHH.db, readable with `obs-agent query ... --db FILE`.
//
// # Crash safety
//
// Every step can be interrupted by kill -9 and is redone by the next pass:
//
//  1. retention_log gets an "archiving" intent row for the hour.
//  2. The archive is written to FILE.tmp (a fresh store plus a copy of the
//     hour), fsynced, renamed to FILE and the directory fsynced. A leftover
//     .tmp is a half-written archive: the next pass deletes and redoes it.
//     An existing FILE is complete, because it only appears by rename.
//  3. DROP TABLE of the hour's four partitions, the removal of their catalog
//     rows and the "dropped" row of retention_log commit in one
//     transaction: either the hour is gone and logged, or it is intact.
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
	if m.ArchiveDir != "" {
		if err := os.MkdirAll(m.ArchiveDir, 0o750); err != nil {
			return res, fmt.Errorf("retention: archive directory: %w", err)
		}
		// A .tmp is an archive a crash interrupted: it is redone below.
		tmps, _ := filepath.Glob(filepath.Join(m.ArchiveDir, "obs-*.db.tmp*"))
		for _, t := range tmps {
			if err := os.Remove(t); err == nil {
				res.Cleaned = append(res.Cleaned, t)
			}
		}
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
		archive := ""
		if m.ArchiveDir != "" {
			archive = filepath.Join(m.ArchiveDir, ArchiveName(h))
			prev, seen := logged[h.UnixNano()]
			if _, err := os.Stat(archive); err == nil && seen && prev.State == "dropped" {
				// The hour was archived and dropped before, and late records
				// brought it back: archive those separately.
				archive = strings.TrimSuffix(archive, ".db") + fmt.Sprintf("-late-%d.db", m.clock().Unix())
			}
			if _, err := os.Stat(archive); errors.Is(err, os.ErrNotExist) {
				if err := m.archive(ctx, h, archive); err != nil {
					return res, err
				}
				res.Archives = append(res.Archives, archive)
			}
			// An existing archive was completed (it only appears by
			// rename) by a pass that crashed before the drop.
		}
		if err := m.Store.DropHour(ctx, h, archive); err != nil {
			return res, fmt.Errorf("retention: %w", err)
		}
		m.step("dropped")
		res.Dropped = append(res.Dropped, h)
		m.logger().Debug("dropped hour", "hour", h.Format(time.RFC3339), "archive", archive)
	}
	n, err := m.vacuum(ctx)
	res.Vacuumed = n
	return res, err
}

// archive writes the hour to path via path.tmp, crash-safely.
func (m *Manager) archive(ctx context.Context, h time.Time, path string) error {
	if err := m.Store.LogRetention(ctx, h, "archiving", path); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	m.step("intent")
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	a, err := store.Open(tmp, store.Options{Clock: m.Clock})
	if err != nil {
		return fmt.Errorf("retention: create archive: %w", err)
	}
	if err := a.Close(); err != nil {
		return fmt.Errorf("retention: create archive: %w", err)
	}
	m.step("tmp-created")
	if err := m.Store.CopyHourTo(ctx, h, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("retention: %w", err)
	}
	for _, sfx := range []string{"-wal", "-shm"} {
		os.Remove(tmp + sfx)
	}
	m.step("archive-written")
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("retention: archive: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("retention: archive: %w", err)
	}
	m.step("archive-renamed")
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
