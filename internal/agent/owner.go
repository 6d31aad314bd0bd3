package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/safefile"
)

// A session row names the agent that owns it by pid, start time and boot
// id. A row whose owner is gone and that has no end was left by an agent
// that was killed (SIGKILL, the OOM killer, a crash, a power loss): the
// next run on the store closes it. Pid and start time together name one
// process for the life of a boot, so a reused pid is not mistaken for the
// owner; the boot id tells a row written before a reboot.

// killedReason is the exit reason of a row closed for a dead agent.
const killedReason = "agent killed"

// identity is one process: pid, start time in clock ticks after boot, and
// the boot it runs in.
type identity struct {
	pid   uint32
	start uint64
	boot  string
}

// selfIdentity is this process's identity.
func selfIdentity() (identity, error) {
	pid := os.Getpid()
	start, err := startTime(pid)
	if err != nil {
		return identity{}, err
	}
	boot, err := bootID()
	if err != nil {
		return identity{}, err
	}
	return identity{pid: uint32(pid), start: start, boot: boot}, nil
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// startTime reads field 22 of /proc/PID/stat. The fields are counted
// after the command name, which is in parentheses and may hold spaces.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ")": state is field 3, so starttime (22) is index 19.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ownerAlive reports whether the agent that owns ss still runs. A row
// without an owner (written before schema 3) counts as dead: if its agent
// does still run, its own EndSession overwrites the row when it ends.
func ownerAlive(ss record.Session, self identity) bool {
	if ss.AgentPID == 0 || ss.BootID != self.boot {
		return false
	}
	st, err := startTime(int(ss.AgentPID))
	return err == nil && st == ss.AgentStart
}

// pendingEnd is the file that keeps a session's end when the store could
// not take it; the next run on the store applies it.
func pendingEndPath(spillDir string, id uint64) string {
	return filepath.Join(spillDir, fmt.Sprintf("session-%d.end", id))
}

// savePendingEnd writes sess to the spill directory, which may be on
// another file system than the store. The file is created exclusively
// and never through a symlink.
func savePendingEnd(spillDir string, sess record.Session) error {
	b, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	d, err := safefile.MkdirAll(spillDir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFileAtomic(filepath.Base(pendingEndPath(spillDir, sess.ID)), b, safefile.DataMode())
}

// closeLeftSessions runs before a session begins. It applies the session
// ends earlier runs kept in the spill directory, then closes every open
// row whose owner is gone, at its last stored record, as "agent killed".
func (s *session) closeLeftSessions(self identity) {
	open, err := s.st.OpenSessions(context.Background())
	if err != nil {
		s.log.Warn("cannot list open sessions; rows of killed agents stay open", "err", err)
		return
	}
	for _, ss := range open {
		if ownerAlive(ss, self) {
			continue
		}
		if s.applyPendingEnd(ss.ID) {
			continue
		}
		end, err := s.st.CloseSession(ss.ID, killedReason)
		if err != nil {
			s.log.Warn("cannot close the row of a killed agent", "session", ss.ID, "err", err)
			continue
		}
		if end != 0 {
			if err := s.st.EndProcesses(ss.ID, end, killedReason); err != nil {
				s.log.Warn("cannot close the process rows of a killed agent", "session", ss.ID, "err", err)
			}
			s.log.Warn("closed the session row of an agent that was killed (it has no end): its end is the last record it stored; records and counts it had not stored are lost",
				"session", ss.ID, "target_pid", ss.PID, "agent_pid", ss.AgentPID, "end", time.Unix(0, end).UTC().Format(time.RFC3339Nano))
		}
	}
}

// applyPendingEnd stores the end an earlier run kept in the spill
// directory for session id, if there is one, and removes the file.
func (s *session) applyPendingEnd(id uint64) bool {
	path := pendingEndPath(s.spillDir(), id)
	b, err := safefile.ReadFile(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot read a kept session end", "file", path, "err", err)
		}
		return false
	}
	var sess record.Session
	if err := json.Unmarshal(b, &sess); err != nil || sess.ID != id {
		s.log.Warn("kept session end is not valid; the row is closed as killed", "file", path, "err", err)
		return false
	}
	if _, err := s.st.ApplySessionEnd(sess); err != nil {
		s.log.Warn("cannot store a kept session end", "file", path, "err", err)
		return false
	}
	if err := safefile.Remove(path); err != nil {
		s.log.Warn("cannot remove a kept session end after storing it", "file", path, "err", err)
	}
	s.log.Info("stored the end of an earlier session that its agent could not write",
		"session", id, "reason", sess.ExitReason, "errors_lost", sess.ErrorsLostTotal())
	return true
}

// checkFreeSpace warns at start when the store's or the spill journal's
// file system is nearly full: a full store sends error records to the
// journal, and a full journal keeps them in memory up to the error lane's
// bound, past which they are lost.
func (s *session) checkFreeSpace() {
	const low = 64 << 20
	storeDir := filepath.Dir(s.opts.DB)
	spill := s.spillDir()
	if _, err := os.Stat(spill); err != nil {
		spill = filepath.Dir(spill)
	}
	var devs []uint64
	for _, d := range []struct{ what, dir string }{{"store", storeDir}, {"spill journal", spill}} {
		var fsst syscall.Statfs_t
		var st syscall.Stat_t
		if syscall.Statfs(d.dir, &fsst) != nil || syscall.Stat(d.dir, &st) != nil {
			continue
		}
		devs = append(devs, st.Dev)
		free := int64(fsst.Bavail) * int64(fsst.Bsize)
		if free < low {
			s.log.Warn("little free space for the "+d.what+": when it fills, "+lossPath(d.what),
				"dir", d.dir, "free_bytes", free)
		}
	}
	if len(devs) == 2 && devs[0] == devs[1] {
		s.log.Debug("the spill journal is on the store's file system: if it fills, error records can't spill; --spill-dir can put the journal on another one", "spill_dir", s.spillDir())
	}
}

func lossPath(what string) string {
	if what == "store" {
		return "error records spill to the journal and ok records are shed (counted)"
	}
	return "error records are kept in memory up to the error lane's bound, and past it lost (counted per function)"
}

// spillDir is the journal directory: --spill-dir, or <db>.spill.
func (s *session) spillDir() string {
	if s.opts.SpillDir != "" {
		return s.opts.SpillDir
	}
	return s.opts.DB + ".spill"
}
