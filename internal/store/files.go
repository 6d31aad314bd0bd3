package store

import (
	"errors"
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/safefile"
)

// Sidecars are the files SQLite keeps beside a database, by suffix. A WAL
// store uses -wal and -shm; -journal is SQLite's rollback journal, which it
// uses before the switch to WAL and for a store in another journal mode. A
// -journal another user planted would be played back into the store as a
// "hot journal" when it is next opened, so it is checked like the others.
var Sidecars = []string{"-wal", "-shm", "-journal"}

// fileID identifies the database file obs-agent created or checked.
type fileID struct{ dev, ino uint64 }

// prepareFiles creates or checks the database file and its sidecars before
// SQLite opens them by name. In a directory only root can write, nobody
// else can create or swap a name, so existing files are only checked (and
// tightened to safefile.DataMode). In a shared sticky directory (/tmp)
// others can still create the names that don't exist yet, so every sidecar
// is created here, owned by root; others can't remove or rename root's
// files there.
func prepareFiles(d *safefile.Dir, base string, exclusive bool) (fileID, error) {
	var st *unix.Stat_t
	if exclusive {
		f, err := d.Create(base, unix.O_RDWR, safefile.DataMode())
		if err != nil {
			return fileID{}, err
		}
		var nst unix.Stat_t
		err = unix.Fstat(int(f.Fd()), &nst)
		f.Close() // a new file: no lock of SQLite's on it
		if err != nil {
			return fileID{}, err
		}
		st = &nst
	} else {
		var err error
		// Never an ordinary open of an existing store: see safefile.Prepare.
		if st, err = d.Prepare(base, safefile.DataMode()); err != nil {
			return fileID{}, err
		}
	}
	return fileID{dev: st.Dev, ino: st.Ino}, prepareSidecars(d, base)
}

func prepareSidecars(d *safefile.Dir, base string) error {
	for _, sfx := range Sidecars {
		name := base + sfx
		if !d.Exists(name) && !d.Shared() {
			continue
		}
		if _, err := d.Prepare(name, safefile.DataMode()); err != nil {
			return err
		}
	}
	return nil
}

// checkFiles runs once SQLite has opened the store: the name must still
// be the file prepareFiles created or checked, and the sidecars SQLite
// created or kept must pass the same checks. SQLite deletes an empty
// -journal of a new database when it opens it, so in a shared directory
// the name is taken again here.
func checkFiles(d *safefile.Dir, base string, id fileID) error {
	st, err := d.Lstat(base)
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != id.dev || st.Ino != id.ino {
		return fmt.Errorf("%w: %s was replaced while it was being opened", safefile.ErrUnsafe, d.Path()+"/"+base)
	}
	err = prepareSidecars(d, base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
