// Package safefile owns how obs-agent creates, opens, renames and removes
// the files it writes, usually as root: the store and its SQLite sidecars,
// the spill journal, archives, the ready file and the per-target locks.
//
// # The rule
//
// A root process that writes by path in a directory another user can write
// can be made to write somewhere else: the other user swaps the name for a
// symlink (or a hard link, or a file of their own) between root's check and
// root's open. safefile refuses such paths instead of racing them, the way a
// setuid program checks its paths:
//
//   - A path is resolved one component at a time from "/" with
//     openat(O_PATH|O_NOFOLLOW), never by the kernel in one go.
//   - Every directory on the way must let no other user replace the entry
//     that comes next: it is owned by root (or by the effective user) and
//     not writable by group or others, or it is a sticky directory owned by
//     root whose entry is owned by root (in /tmp others can add names but
//     cannot remove or rename root's).
//   - A symlink on the way is followed only when it passes the same test
//     (owned by root, in such a directory); /var/run -> /run passes, a link
//     another user planted does not.
//   - The directory that receives the files must pass the same test as a
//     whole: a directory another user can write without the sticky bit is
//     refused, even when it is reached safely.
//   - Files are created with O_CREAT|O_EXCL|O_NOFOLLOW; an existing file is
//     opened with O_NOFOLLOW and must be a regular file owned by root (or
//     the effective user) with a single link. Whole files appear by a
//     rename from a temporary name created the same way.
//
// Because every directory on the resolved path can be changed by root
// alone, the resolved, symlink-free path (Dir.Path) names the same files
// for as long as the agent runs. That is what makes it safe to hand the path
// to SQLite, which opens the database and its -wal, -shm and -journal
// files by name (with O_NOFOLLOW on the last component, modernc.org/sqlite
// as of v1.62). In a sticky shared directory other users can still create
// names that do not exist yet, so the store pre-creates its sidecars there
// (see internal/store).
//
// "Trusted" owners are root and the effective user: an unprivileged user
// running obs-agent on their own files is protected against other users in
// the same way.
//
// # Modes
//
// Files holding traced data are created 0600 (DataMode). SetDataGroup makes
// them 0640 and gives them to one group, and makes the directories created
// for them 0750 instead of 0700, so that members of the group can read the
// store without being root.
package safefile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrUnsafe is wrapped by every refusal: the path, or a file on it, could be
// changed by another user while obs-agent writes it.
var ErrUnsafe = errors.New("unsafe path")

// dataGID is the group traced-data files are given; -1 for none.
var dataGID atomic.Int64

func init() { dataGID.Store(-1) }

// SetDataGroup makes traced-data files 0640 and owned by group gid, and
// the directories created for them 0750; gid < 0 restores 0600 and 0700.
// One agent writes for one audience, so this is a property of the process,
// set once from --group before anything is written.
func SetDataGroup(gid int) { dataGID.Store(int64(max(gid, -1))) }

// DataGroup is the group set by SetDataGroup, or -1.
func DataGroup() int { return int(dataGID.Load()) }

// DataMode is the mode of files that hold traced data: 0600, or 0640 with
// a data group.
func DataMode() os.FileMode {
	if DataGroup() >= 0 {
		return 0o640
	}
	return 0o600
}

// DirMode is the mode of the directories safefile creates: 0700, or 0750
// with a data group (so the group can reach the files).
func DirMode() os.FileMode {
	if DataGroup() >= 0 {
		return 0o750
	}
	return 0o700
}

// LookupGroup resolves a group name (or a numeric gid) that must exist on
// this host.
func LookupGroup(name string) (int, error) {
	if name == "" {
		return -1, errors.New("empty group name")
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			g, err = user.LookupGroupId(name)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("group %q does not exist on this host (see /etc/group): %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil || gid < 0 {
		return -1, fmt.Errorf("group %q has an unusable gid %q", name, g.Gid)
	}
	return gid, nil
}

// trusted reports whether uid may own what obs-agent writes through.
func trusted(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// who describes an owner for messages: "uid 1000 (alice)".
func who(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return fmt.Sprintf("uid %d (%s)", uid, u.Username)
	}
	return fmt.Sprintf("uid %d", uid)
}

// shared reports whether users other than root and the effective user
// can create or remove names in the directory st describes.
func shared(st *unix.Stat_t) bool {
	return !trusted(st.Uid) || st.Mode&0o022 != 0
}

// stickyRoot reports whether the directory is sticky and owned by a
// trusted user: then others cannot remove or rename entries they don't own.
func stickyRoot(st *unix.Stat_t) bool {
	return st.Mode&unix.S_ISVTX != 0 && trusted(st.Uid)
}

// writers describes who else can write a directory, for messages.
func writers(st *unix.Stat_t) string {
	switch {
	case !trusted(st.Uid):
		return "its owner " + who(st.Uid)
	case st.Mode&0o002 != 0:
		return fmt.Sprintf("every user (mode %04o)", st.Mode&0o7777)
	default:
		return fmt.Sprintf("group %d (mode %04o)", st.Gid, st.Mode&0o7777)
	}
}

// checkEntry refuses an entry of directory dir (described by dst) that
// another user could replace, or that another user created in a shared
// sticky directory.
func checkEntry(dir string, dst *unix.Stat_t, name string, est *unix.Stat_t) error {
	p := filepath.Join(dir, name)
	if !shared(dst) {
		return nil
	}
	if !stickyRoot(dst) {
		return fmt.Errorf("%w: %s can be written by %s, who could replace %s with a link while obs-agent writes through it as root; use a directory only root can write, such as /var/lib/obs-agent",
			ErrUnsafe, dir, writers(dst), p)
	}
	if !trusted(est.Uid) {
		return fmt.Errorf("%w: %s is owned by %s in the shared directory %s: refusing to use a file or directory another user created; remove it or choose another path",
			ErrUnsafe, p, who(est.Uid), dir)
	}
	return nil
}

// Dir is a directory reached by the rule in the package comment. Its
// methods create and open files inside it relative to the descriptor, so
// nothing is resolved by path again.
type Dir struct {
	fd   int // O_PATH descriptor
	path string
	st   unix.Stat_t
}

// Path is the directory's absolute, symlink-free path.
func (d *Dir) Path() string { return d.path }

// Shared reports whether other users can create names in the directory (a
// sticky directory such as /tmp): names obs-agent uses there must be taken
// before SQLite creates them.
func (d *Dir) Shared() bool { return shared(&d.st) }

// Close releases the descriptor.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// OpenDir opens an existing directory that files may be written in.
func OpenDir(path string) (*Dir, error) { return resolve(path, false) }

// MkdirAll opens the directory, creating it and any missing parent with
// DirMode. Existing directories are left as they are.
func MkdirAll(path string) (*Dir, error) { return resolve(path, true) }

type level struct {
	fd   int
	path string
	st   unix.Stat_t
}

// maxLinks bounds the symlinks followed while resolving one path, as the
// kernel's ELOOP limit does.
const maxLinks = 40

func resolve(path string, create bool) (*Dir, error) {
	if path == "" {
		return nil, errors.New("empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: "/", Err: err}
	}
	stack := []level{{fd: root, path: "/"}}
	closeAll := func() {
		for _, l := range stack {
			unix.Close(l.fd)
		}
	}
	if err := unix.Fstat(root, &stack[0].st); err != nil {
		closeAll()
		return nil, &fs.PathError{Op: "stat", Path: "/", Err: err}
	}
	comps := splitPath(abs)
	links := 0
	for len(comps) > 0 {
		name := comps[0]
		comps = comps[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(stack[len(stack)-1].fd)
				stack = stack[:len(stack)-1]
			}
			continue
		}
		top := &stack[len(stack)-1]
		fd, err := unix.Openat(top.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err := mkdirat(top, name); err != nil {
				closeAll()
				return nil, err
			}
			fd, err = unix.Openat(top.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		p := filepath.Join(top.path, name)
		if err != nil {
			closeAll()
			return nil, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			closeAll()
			return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
		}
		if err := checkEntry(top.path, &top.st, name, &st); err != nil {
			unix.Close(fd)
			closeAll()
			return nil, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			stack = append(stack, level{fd: fd, path: p, st: st})
		case unix.S_IFLNK:
			target, err := readlinkFD(fd)
			unix.Close(fd)
			if err != nil {
				closeAll()
				return nil, &fs.PathError{Op: "readlink", Path: p, Err: err}
			}
			if !trusted(st.Uid) {
				closeAll()
				return nil, fmt.Errorf("%w: %s is a symlink owned by %s: refusing to follow a link another user controls", ErrUnsafe, p, who(st.Uid))
			}
			if links++; links > maxLinks {
				closeAll()
				return nil, &fs.PathError{Op: "open", Path: abs, Err: unix.ELOOP}
			}
			if strings.HasPrefix(target, "/") {
				for _, l := range stack[1:] {
					unix.Close(l.fd)
				}
				stack = stack[:1]
			}
			comps = append(splitPath(target), comps...)
		default:
			unix.Close(fd)
			closeAll()
			return nil, &fs.PathError{Op: "open", Path: p, Err: unix.ENOTDIR}
		}
	}
	last := stack[len(stack)-1]
	for _, l := range stack[:len(stack)-1] {
		unix.Close(l.fd)
	}
	if shared(&last.st) && !stickyRoot(&last.st) {
		unix.Close(last.fd)
		return nil, fmt.Errorf("%w: %s can be written by %s, who could swap the files obs-agent writes in it for links; use a directory only root can write, such as /var/lib/obs-agent",
			ErrUnsafe, last.path, writers(&last.st))
	}
	return &Dir{fd: last.fd, path: last.path, st: last.st}, nil
}

func splitPath(p string) []string { return strings.Split(p, "/") }

// mkdirat creates one directory with DirMode and the data group.
func mkdirat(parent *level, name string) error {
	p := filepath.Join(parent.path, name)
	err := unix.Mkdirat(parent.fd, name, uint32(DirMode()))
	if errors.Is(err, unix.EEXIST) {
		return nil // raced with another creator: checked like any entry
	}
	if err != nil {
		return &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	fd, err := unix.Openat(parent.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	// The umask may have cut the mode; set it exactly.
	if err := unix.Fchmod(fd, uint32(DirMode())); err != nil {
		return &fs.PathError{Op: "chmod", Path: p, Err: err}
	}
	if g := DataGroup(); g >= 0 {
		if err := unix.Fchown(fd, -1, g); err != nil {
			return &fs.PathError{Op: "chown", Path: p, Err: err}
		}
	}
	return nil
}

func readlinkFD(fd int) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

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
	if err := d.checkName(name); err != nil {
		return err
	}
	st, err := d.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
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

// TempName returns a fresh name for a temporary file beside name.
func TempName(name string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "." + name + ".tmp-" + hex.EncodeToString(b[:])
}

// CheckReplaceable fails unless name is missing or is a file obs-agent may
// replace: a regular file of root's (or the effective user's) with one link.
func (d *Dir) CheckReplaceable(name string) error {
	if err := d.checkName(name); err != nil {
		return err
	}
	st, err := d.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return d.checkFile(name, st)
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
	tmp := TempName(name)
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

// Path-level helpers, for callers that keep paths rather than a Dir. Each
// resolves the parent directory by the rule and acts relative to it.

// inDir opens the parent of path and returns it with the base name.
func inDir(path string) (*Dir, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", err
	}
	d, err := OpenDir(filepath.Dir(abs))
	if err != nil {
		return nil, "", err
	}
	return d, filepath.Base(abs), nil
}

// OpenFile is os.OpenFile by the rule: with O_CREATE|O_EXCL the file is
// created as by Dir.Create, with O_CREATE alone as by Dir.Ensure (an
// existing file keeps its contents and is given perm), without O_CREATE it
// is opened as by Dir.Open.
func OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	d, name, err := inDir(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	switch {
	case flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return d.Create(name, flag&^(os.O_CREATE|os.O_EXCL), perm)
	case flag&os.O_CREATE != 0:
		f, _, err := d.Ensure(name, perm)
		if err == nil && flag&os.O_TRUNC != 0 {
			err = f.Truncate(0)
		}
		return f, err
	default:
		return d.Open(name, flag)
	}
}

// ReadFile reads a file opened as by Dir.Open.
func ReadFile(path string) ([]byte, error) {
	f, err := OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Remove removes a file as by Dir.Remove.
func Remove(path string) error {
	d, name, err := inDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Remove(name)
}

// RemoveDir removes an empty directory obs-agent owns.
func RemoveDir(path string) error {
	d, name, err := inDir(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.RemoveDir(name)
}

// Rename renames within one directory, as by Dir.Rename.
func Rename(oldPath, newPath string) error {
	od, oname, err := inDir(oldPath)
	if err != nil {
		return err
	}
	defer od.Close()
	nabs, err := filepath.Abs(newPath)
	if err != nil {
		return err
	}
	if filepath.Dir(nabs) != filepath.Dir(filepath.Join(od.path, oname)) {
		if nd, nname, err := inDir(newPath); err == nil {
			defer nd.Close()
			if nd.st.Dev == od.st.Dev && nd.st.Ino == od.st.Ino {
				return od.Rename(oname, nname)
			}
		}
		return fmt.Errorf("rename %s to %s: not in one directory", oldPath, newPath)
	}
	return od.Rename(oname, filepath.Base(nabs))
}

// Truncate cuts a file, opened as by Dir.Open, to size.
func Truncate(path string, size int64) error {
	f, err := OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

// SyncDir fsyncs a directory reached by the rule.
func SyncDir(path string) error {
	d, err := OpenDir(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadDir lists a directory reached by the rule.
func ReadDir(path string) ([]fs.DirEntry, error) {
	d, err := OpenDir(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir()
}

// WriteFileAtomic replaces path with data, as by Dir.WriteFileAtomic. The
// directory must exist.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	d, name, err := inDir(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFileAtomic(name, data, perm)
}
