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
// words a writer's log uses for it ("is on a full disk"), and the sentinel
// the error matches. An error that matches no sentinel gives "can't be
// written" and nil.
func Trouble(err error) (what string, kind error) {

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
			return k.what, k.err
		}
	}
	return "can't be written", nil
}
