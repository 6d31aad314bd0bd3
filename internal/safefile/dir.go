package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

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
func OpenDir(path string) (*Dir, error) { return resolve(path, nil) }

// CheckDir checks, creating nothing, that MkdirAll(path) would be allowed:
// the deepest existing directory on the path is opened by the rule (so a
// link, a foreign file or a directory others can change on the way is
// refused as ErrUnsafe) and whatever is missing below it is left for
// MkdirAll to create. Flag checks call it before anything runs.
func CheckDir(path string) error {
	p, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	for {
		d, err := OpenDir(p)
		if err == nil {
			return d.Close()
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, fs.ErrNotExist) || parent == p {
			return err
		}
		p = parent
	}
}

// MkdirAll opens the directory, creating it and any missing parent with
// DirMode. Existing directories are left as they are.
func MkdirAll(path string) (*Dir, error) {
	return resolve(path, &dirAttrs{mode: DirMode(), gid: DataGroup()})
}

// MkdirAllPrivate is MkdirAll for directories of root's own, which hold
// no traced data (the per-target locks): created 0700, whatever the data
// group.
func MkdirAllPrivate(path string) (*Dir, error) {
	return resolve(path, &dirAttrs{mode: 0o700, gid: -1})
}

// dirAttrs are the mode and group (-1: none) of directories resolve
// creates; nil creates none.
type dirAttrs struct {
	mode os.FileMode
	gid  int
}

type level struct {
	fd   int
	path string
	st   unix.Stat_t
}

// maxLinks bounds the symlinks followed while resolving one path, as the
// kernel's ELOOP limit does.
const maxLinks = 40

func resolve(path string, create *dirAttrs) (*Dir, error) {
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
		if errors.Is(err, unix.ENOENT) && create != nil {
			if err := mkdirat(top, name, create); err != nil {
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

// mkdirat creates one directory with the attributes.
func mkdirat(parent *level, name string, a *dirAttrs) error {
	p := filepath.Join(parent.path, name)
	err := unix.Mkdirat(parent.fd, name, uint32(a.mode))
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
	if err := unix.Fchmod(fd, uint32(a.mode)); err != nil {
		return &fs.PathError{Op: "chmod", Path: p, Err: err}
	}
	if a.gid >= 0 {
		if err := unix.Fchown(fd, -1, a.gid); err != nil {
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
