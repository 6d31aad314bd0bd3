package otlp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"github.com/obs-agent/obs-agent/internal/safefile"
)

// State is the progress of a store export, kept in a small JSON file so a
// rerun continues where an interrupted one stopped.
//
// Calls are read hour by hour in (start, id) order, the store's own order,
// so the progress of an hour is a cursor: every call of the hour whose
// (start, id) is at or before it, and whose start is at or after Since,
// was sent. A later --since is covered by the same cursors; an earlier one
// is not, which is why Check refuses it.
type State struct {
	Version int               `json:"version"`
	Since   int64             `json:"since_ns"` // the earliest --since the cursors cover
	Hours   map[string]Cursor `json:"hours"`    // by hour start, Unix ns in decimal
}

// Cursor is the last call sent of one hour.
type Cursor struct {
	Start int64  `json:"start_ns"`
	ID    uint64 `json:"id"`
}

// after reports whether call (start, id) comes after the cursor.
func (c Cursor) after(start int64, id uint64) bool {
	return start > c.Start || (start == c.Start && id > c.ID)
}

const stateVersion = 1

// maxStateBytes bounds what LoadState reads: a year of hours is ~400 KB.
const maxStateBytes = 16 << 20

// LoadState reads the state file at path; a missing file is an empty
// state. It is opened through safefile: no link is followed, and the file
// must be a regular file of root's or the effective user's.
func LoadState(path string) (*State, error) {
	st := &State{Version: stateVersion, Hours: map[string]Cursor{}}
	f, err := safefile.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open export state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read export state: %w", err)
	}
	if len(b) > maxStateBytes {
		return nil, fmt.Errorf("export state %s: larger than %d bytes; not a state file?", path, maxStateBytes)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("export state %s: %w (remove it to export everything again)", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("export state %s: version %d, want %d", path, st.Version, stateVersion)
	}
	if st.Hours == nil {
		st.Hours = map[string]Cursor{}
	}
	for k := range st.Hours {
		if _, err := strconv.ParseInt(k, 10, 64); err != nil {
			return nil, fmt.Errorf("export state %s: bad hour %q", path, k)
		}
	}
	return st, nil
}

func hourKey(h int64) string { return strconv.FormatInt(h, 10) }

// Save writes the state to path atomically through safefile: a new file
// created exclusively beside it, synced, then renamed over it, so a crash
// leaves the old state or the new one, never a torn file, and a planted
// link is never followed.
func (st *State) Save(path string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode export state: %w", err)
	}
	if err := safefile.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("write export state: %w", err)
	}
	return nil
}
