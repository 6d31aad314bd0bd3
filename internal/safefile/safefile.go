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
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
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
