package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	sqlite3 "modernc.org/sqlite/lib"
)

// Sentinel errors that a writer branches on. Every write error that matches
// one of them wraps both the sentinel and the driver error, so
// errors.Is(err, ErrLocked) works and the driver's text stays in the message.
// A failed write never leaves part of its batch behind: the caller may spill
// the batch and retry it unchanged.
var (
	// ErrLocked: another connection holds the write lock (SQLITE_BUSY or
	// SQLITE_LOCKED) for longer than the busy timeout.
	ErrLocked = errors.New("store is locked by another writer: retry the batch later, or stop the other process writing this file (only one obs-agent may write a store)")
	// ErrReadOnly: the file, its directory or the file system can't be
	// written (SQLITE_READONLY, EROFS, EACCES, EPERM).
	// The texts name no flag: the file may be the store (--db) or an
	// archive (--archive); the caller says which.
	ErrReadOnly = errors.New("read-only: check the permissions of the file and its directory, and that the file system is mounted read-write")
	// ErrDiskFull: the file system is full (SQLITE_FULL, ENOSPC, EDQUOT, or
	// an I/O error while the file system has no space left).
	ErrDiskFull = errors.New("disk full: free space on the file system, or shorten the retention window")
	// ErrCorrupt: the file is not a SQLite database or is damaged
	// (SQLITE_CORRUPT, SQLITE_NOTADB).
	ErrCorrupt = errors.New("store file is corrupt or not an obs-agent database: move it aside (it may be recoverable with `sqlite3 FILE .recover`) and let obs-agent create a new one")
	// ErrNewerSchema: the file was written by a newer obs-agent.
	ErrNewerSchema = errors.New("store was created by a newer obs-agent")
	// ErrNotFound is returned by Call when no call has the id.
	ErrNotFound = errors.New("not found")
	// ErrNoStore is returned by a read-only Open when the file doesn't exist.
	ErrNoStore = errors.New("no store")
)

// classify maps a driver or system error onto the sentinels above. Errors
// that match none of them are returned wrapped with the operation only.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if kind := kindOf(err); kind != nil {
		return fmt.Errorf("store: %s: %w: %s%w", op, kind, words(err), err)
	}
	return fmt.Errorf("store: %s: %s%w", op, words(err), err)
}

// ioWords are SQLite's extended I/O result codes in plain words: the
// driver's own text is "disk I/O error (4874)" for every one of them.
var ioWords = map[int]string{
	sqlite3.SQLITE_IOERR_READ:              "reading the file failed",
	sqlite3.SQLITE_IOERR_SHORT_READ:        "the file is shorter than it should be (truncated?)",
	sqlite3.SQLITE_IOERR_WRITE:             "writing the file failed",
	sqlite3.SQLITE_IOERR_FSYNC:             "flushing the file to disk failed",
	sqlite3.SQLITE_IOERR_DIR_FSYNC:         "flushing the directory to disk failed",
	sqlite3.SQLITE_IOERR_TRUNCATE:          "truncating the file failed",
	sqlite3.SQLITE_IOERR_FSTAT:             "reading the file's size failed",
	sqlite3.SQLITE_IOERR_UNLOCK:            "unlocking the file failed",
	sqlite3.SQLITE_IOERR_RDLOCK:            "locking the file failed (a file system without POSIX locks?)",
	sqlite3.SQLITE_IOERR_LOCK:              "locking the file failed (a file system without POSIX locks?)",
	sqlite3.SQLITE_IOERR_CHECKRESERVEDLOCK: "locking the file failed (a file system without POSIX locks?)",
	sqlite3.SQLITE_IOERR_DELETE:            "deleting a journal file failed",
	sqlite3.SQLITE_IOERR_ACCESS:            "checking the file's permissions failed",
	sqlite3.SQLITE_IOERR_NOMEM:             "out of memory",
	sqlite3.SQLITE_IOERR_SHMOPEN:           "opening the shared-memory file (-shm) beside it failed",
	sqlite3.SQLITE_IOERR_SHMSIZE:           "growing the shared-memory file (-shm) beside it failed",
	sqlite3.SQLITE_IOERR_SHMLOCK:           "locking the shared-memory file (-shm) beside it failed",
	sqlite3.SQLITE_IOERR_SHMMAP:            "mapping the shared-memory file (-shm) beside it failed",
	sqlite3.SQLITE_IOERR_MMAP:              "memory-mapping the file failed",
	sqlite3.SQLITE_IOERR:                   "an I/O error (is it a directory, or a device?)",
	sqlite3.SQLITE_CANTOPEN:                "cannot open the file",
	sqlite3.SQLITE_CANTOPEN_ISDIR:          "it is a directory",
}

// words prefixes a driver error with its plain meaning, when it has one.
func words(err error) string {
	if code, ok := sqliteCode(err); ok {
		if w, ok := ioWords[code]; ok {
			return w + ": "
		}
	}
	return ""
}

// sqliteCode is the SQLite result code of err: of the driver's
// *sqlite.Error, or of the writer's own raw path (rawError).
func sqliteCode(err error) (int, bool) {
	var ce interface{ Code() int }
	if errors.As(err, &ce) {
		return ce.Code(), true
	}
	return 0, false
}

// explain finds the cause behind the errors SQLite reports vaguely:
// SQLITE_CANTOPEN or an I/O error may be a directory named as the file, a
// read-only file or directory, or a full file system (SQLITE_IOERR_SHMSIZE
// when the -shm can't grow, SQLITE_IOERR_WRITE when a page can't be
// written). op says what was being done, path is the store file.
func explain(op, path string, err error) error {
	// The driver's *sqlite.Error, or the writer's rawError.
	var se interface {
		error
		Code() int
	}
	if err == nil || !errors.As(err, &se) || kindOf(err) != nil {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR:
	default:
		return err
	}
	if derr := dirError(op, path, se); derr != nil {
		return derr
	}
	dir := filepath.Dir(path)
	var fs unix.Statfs_t
	// A few pages: SQLite needs room for a page and a -shm block.
	if unix.Statfs(dir, &fs) == nil && uint64(fs.Bavail)*uint64(fs.Bsize) < 64<<10 {
		return fmt.Errorf("store: %s: %w: %d bytes free in %s; %s%w", op, ErrDiskFull, uint64(fs.Bavail)*uint64(fs.Bsize), dir, words(se), se)
	}
	if se.Code()&0xff == sqlite3.SQLITE_CANTOPEN {
		target := path
		if _, serr := os.Stat(path); serr != nil {
			target = dir
		}
		if aerr := unix.Access(target, unix.W_OK); aerr != nil {
			return fmt.Errorf("store: %s: %w: %w (%w)", op, ErrReadOnly, se, aerr)
		}
	}
	return err
}

func kindOf(err error) error {
	for _, k := range []error{ErrLocked, ErrReadOnly, ErrDiskFull, ErrCorrupt, ErrNewerSchema} {
		if errors.Is(err, k) {
			return nil // already classified
		}
	}
	if code, ok := sqliteCode(err); ok {
		switch code & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return ErrLocked
		case sqlite3.SQLITE_READONLY:
			return ErrReadOnly
		case sqlite3.SQLITE_FULL:
			return ErrDiskFull
		case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return ErrCorrupt
		case sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
			return ErrReadOnly
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ErrDiskFull
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, fs.ErrPermission):
		return ErrReadOnly
	}
	return nil
}

// dirError says that path, named as the store, is a directory, wrapping
// cause; nil when it is not one.
func dirError(op, path string, cause error) error {
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		return nil
	}
	return fmt.Errorf("store: %s: it is a directory; a store is a file, e.g. %s: %w", op, filepath.Join(path, "obs.db"), cause)
}
