package store

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"modernc.org/sqlite"
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
	ErrReadOnly = errors.New("store is read-only: check the permissions of the file and its directory and that the file system is mounted read-write, or pass another --db")
	// ErrDiskFull: the file system is full (SQLITE_FULL, ENOSPC, EDQUOT).
	ErrDiskFull = errors.New("disk full: free space on the store's file system, shorten the retention window, or pass a --db on a larger file system")
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
		return fmt.Errorf("store: %s: %w: %w", op, kind, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

func kindOf(err error) error {
	for _, k := range []error{ErrLocked, ErrReadOnly, ErrDiskFull, ErrCorrupt, ErrNewerSchema} {
		if errors.Is(err, k) {
			return nil // already classified
		}
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
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
