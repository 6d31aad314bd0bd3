package store

import (
	"errors"

	sqlite3 "modernc.org/sqlite/lib"
)

// Refused reports whether a failed write means the store refuses the
// records themselves (a constraint violation: in practice an id that is
// already stored), so writing the same records again cannot succeed. Any
// other failure is the store failing (locked, read-only, full, corrupt),
// which a retry may outlast.
func Refused(err error) bool {
	var ce interface{ Code() int }
	return errors.As(err, &ce) && ce.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

// Trouble names what is wrong with the store after a failed write: the
// sentinel the error matches, and the words a writer's log uses for it
// ("is on a full disk"). An error that matches no sentinel gives nil and
// "can't be written".
func Trouble(err error) (kind error, what string) {
	for _, k := range []struct {
		err  error
		what string
	}{
		{ErrDiskFull, "is on a full disk"},
		{ErrLocked, "is locked by another writer"},
		{ErrReadOnly, "is read-only"},
		{ErrCorrupt, "is corrupt"},
		{ErrNewerSchema, "was created by a newer obs-agent"},
	} {
		if errors.Is(err, k.err) {
			return k.err, k.what
		}
	}
	return nil, "can't be written"
}
