package safefile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Lstat describes name without following it; fs.ErrNotExist when missing.
func (d *Dir) Lstat(name string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: d.join(name), Err: err}
	}
	return &st, nil
}

// Exists reports whether anything (a file, a link, a directory) has the
// name.
func (d *Dir) Exists(name string) bool {
	_, err := d.Lstat(name)
	return err == nil
}

func (d *Dir) join(name string) string { return filepath.Join(d.path, name) }

// checkName refuses a name with a slash or a dot-dot: every name is one
// entry of this directory.
func (d *Dir) checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%s: %q is not a file name", d.path, name)
	}
	return nil
}

// checkFile refuses an existing file that is not a regular file owned by a
// trusted user with one link.
func (d *Dir) checkFile(name string, st *unix.Stat_t) error {
	p := d.join(name)
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("%w: %s is a symlink: refusing to write through it; remove it or choose another path", ErrUnsafe, p)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%w: %s is not a regular file", ErrUnsafe, p)
	case !trusted(st.Uid):
		return fmt.Errorf("%w: %s is owned by %s: refusing to write into a file another user controls; remove it or choose another path", ErrUnsafe, p, who(st.Uid))
	case st.Nlink != 1:
		return fmt.Errorf("%w: %s has %d hard links: refusing to write into a file that is also reachable under another name", ErrUnsafe, p, st.Nlink)
	}
	return nil
}

// Create creates name exclusively (O_EXCL|O_NOFOLLOW) with perm exactly
// (not cut by the umask); see SetDataGroup for the group.
func (d *Dir) Create(name string, flag int, perm os.FileMode) (*os.File, error) {
	if err := d.checkName(name); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(d.fd, name, flag|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ELOOP) {
			if st, serr := d.Lstat(name); serr == nil {
				if cerr := d.checkFile(name, st); cerr != nil {
					return nil, cerr
				}
			}
		}
		return nil, &fs.PathError{Op: "create", Path: d.join(name), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.join(name))
	if err := setMode(f, perm); err != nil {
		f.Close()
		unix.Unlinkat(d.fd, name, 0)
		return nil, err
	}
	return f, nil
}

// setMode sets perm exactly, and gives a group-readable, other-less file to
// the data group.
func setMode(f *os.File, perm os.FileMode) error {
	if err := f.Chmod(perm.Perm()); err != nil {
		return err
	}
	if g := DataGroup(); g >= 0 && perm&0o070 != 0 && perm&0o007 == 0 {
		if err := f.Chown(-1, g); err != nil {
			return err
		}
	}
	return nil
}

// Open opens an existing file with O_NOFOLLOW and checks it (a regular
// file, owned by root or the effective user, one link).
func (d *Dir) Open(name string, flag int) (*os.File, error) {
	if err := d.checkName(name); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(d.fd, name, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symlink: refusing to follow it; remove it or choose another path", ErrUnsafe, d.join(name))
		}
		return nil, &fs.PathError{Op: "open", Path: d.join(name), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.join(name))
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "stat", Path: d.join(name), Err: err}
	}
	if err := d.checkFile(name, &st); err != nil {
		f.Close()
		return nil, err
	}
	// O_NONBLOCK only kept a planted FIFO from blocking the open.
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Ensure opens name for reading and writing, creating it with perm when it
// is missing. An existing file is checked as by Open and given perm (and
// the data group) when its mode differs, so that an older, more open file
// is tightened. created says whether the file is new.
func (d *Dir) Ensure(name string, perm os.FileMode) (f *os.File, created bool, err error) {
	for range 3 {
		f, err = d.Create(name, unix.O_RDWR, perm)
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, false, err
		}
		f, err = d.Open(name, unix.O_RDWR)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed between the two opens: create it again
		}
		if err != nil {
			return nil, false, err
		}
		fi, err := f.Stat()
		if err == nil && fi.Mode().Perm() != perm.Perm() {
			err = setMode(f, perm)
		}
		if err != nil {
			f.Close()
			return nil, false, err
		}
		return f, false, nil
	}
	return nil, false, err
}

// Prepare makes sure name is a file obs-agent may write, for a library
// that opens it by path itself (SQLite): a missing file is created empty
// with perm, an existing one is checked as by Open and given perm (and the
// data group) when its mode differs. It returns the file's stat.
//
// An existing file is never opened for reading or writing here, only with
// O_PATH: closing any ordinary descriptor of a file drops every POSIX lock
// the process holds on it, and SQLite in this process may hold locks on
// it (another connection to the same store). An O_PATH descriptor holds
// and drops no locks.
func (d *Dir) Prepare(name string, perm os.FileMode) (*unix.Stat_t, error) {
	if err := d.checkName(name); err != nil {
		return nil, err
	}
	for range 3 {
		fd, err := unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			f, err := d.Create(name, unix.O_RDWR, perm)
			if errors.Is(err, fs.ErrExist) {
				continue // created meanwhile: check it
			}
			if err != nil {
				return nil, err
			}
			// A new file: nobody holds a lock on it yet.
			var st unix.Stat_t
			err = unix.Fstat(int(f.Fd()), &st)
			f.Close()
			return &st, err
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: d.join(name), Err: err}
		}
		st, err := d.prepareExisting(fd, name, perm)
		unix.Close(fd)
		return st, err
	}
	return nil, fmt.Errorf("%s keeps appearing and disappearing", d.join(name))
}

func (d *Dir) prepareExisting(fd int, name string, perm os.FileMode) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: d.join(name), Err: err}
	}
	if err := d.checkFile(name, &st); err != nil {
		return nil, err
	}
	if os.FileMode(st.Mode).Perm() != perm.Perm() {
		// fchmod refuses O_PATH descriptors; the /proc link names this
		// very inode.
		if err := unix.Fchmodat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), uint32(perm.Perm()), 0); err != nil {
			return nil, &fs.PathError{Op: "chmod", Path: d.join(name), Err: err}
		}
		st.Mode = st.Mode&^0o777 | uint32(perm.Perm())
	}
	if g := DataGroup(); g >= 0 && perm&0o070 != 0 && perm&0o007 == 0 && int(st.Gid) != g {
		if err := unix.Fchownat(fd, "", -1, g, unix.AT_EMPTY_PATH); err != nil {
			return nil, &fs.PathError{Op: "chown", Path: d.join(name), Err: err}
		}
		st.Gid = uint32(g)
	}
	return &st, nil
}

// Remove removes a file obs-agent owns; a missing file is not an error, a
// file another user owns is refused.
func (d *Dir) Remove(name string) error {
	st, err := d.lstatName(name)
	if st == nil {
		return err
	}
	if !trusted(st.Uid) {
		return fmt.Errorf("%w: %s is owned by %s: not removing another user's file", ErrUnsafe, d.join(name), who(st.Uid))
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "remove", Path: d.join(name), Err: err}
	}
	return nil
}

// RemoveDir removes an empty directory entry obs-agent owns.
func (d *Dir) RemoveDir(name string) error {
	if err := d.checkName(name); err != nil {
		return err
	}
	st, err := d.Lstat(name)
	if err != nil {
		return err
	}
	if !trusted(st.Uid) {
		return fmt.Errorf("%w: %s is owned by %s", ErrUnsafe, d.join(name), who(st.Uid))
	}
	return unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR)
}

// Rename renames old to new inside the directory, replacing new. It never
// follows a link: a symlink at new is replaced, not written through.
func (d *Dir) Rename(oldName, newName string) error {
	if err := d.checkName(oldName); err != nil {
		return err
	}
	if err := d.checkName(newName); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd, oldName, d.fd, newName); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(oldName), New: d.join(newName), Err: err}
	}
	return nil
}

// RenameNoReplace renames old to new only when new does not exist
// (renameat2 RENAME_NOREPLACE); otherwise it fails with fs.ErrExist.
func (d *Dir) RenameNoReplace(oldName, newName string) error {
	if err := d.checkName(oldName); err != nil {
		return err
	}
	if err := d.checkName(newName); err != nil {
		return err
	}
	if err := unix.Renameat2(d.fd, oldName, d.fd, newName, unix.RENAME_NOREPLACE); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(oldName), New: d.join(newName), Err: err}
	}
	return nil
}

// Sync makes the directory's entries durable.
func (d *Dir) Sync() error {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &fs.PathError{Op: "fsync", Path: d.path, Err: err}
	}
	return nil
}

// ReadDir lists the directory.
func (d *Dir) ReadDir() ([]fs.DirEntry, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	return f.ReadDir(-1)
}

// tempName returns a fresh name for a temporary file beside name.
func tempName(name string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "." + name + ".tmp-" + hex.EncodeToString(b[:])
}

// CheckReplaceable fails unless name is missing or is a file obs-agent may
// replace: a regular file of root's (or the effective user's) with one link.
func (d *Dir) CheckReplaceable(name string) error {
	st, err := d.lstatName(name)
	if st == nil {
		return err
	}
	return d.checkFile(name, st)
}

// lstatName checks that name is one entry of the directory and describes
// it; nil and no error when it does not exist.
func (d *Dir) lstatName(name string) (*unix.Stat_t, error) {
	if err := d.checkName(name); err != nil {
		return nil, err
	}
	st, err := d.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return st, err
}

// WriteFileAtomic replaces name with data: a temporary file is created
// exclusively, written, fsynced and renamed over name. An existing name
// must be a file obs-agent may replace (a regular file of root's or the
// effective user's); a symlink there is refused, and even one planted
// after that check is replaced by the rename, never followed.
func (d *Dir) WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	if err := d.CheckReplaceable(name); err != nil {
		return err
	}
	tmp := tempName(name)
	f, err := d.Create(tmp, unix.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.Rename(tmp, name)
	}
	if err != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		return err
	}
	return d.Sync()
}
