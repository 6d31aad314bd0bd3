package query

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// ErrNoBinary says that no traced process in the store ran the binary
// asked for.
var ErrNoBinary = errors.New("no traced process ran it")

// MatchBinary turns a binary, given as a path or as a file name, into the
// selection of the traced processes that ran it (store.Filter.Binary):
//
//   - a path (it holds a '/') selects the processes stored under that
//     path (made absolute), and, when the file is readable here, those of
//     its build id whatever path they were traced under;
//   - a name selects the processes whose stored path ends in that name.
//
// Either way the processes of the same build as a selected one are
// selected too: `attach --pid` reads a process's program through
// /proc/PID/exe, and the build id is what ties such a process to its
// binary. No process selected is an error wrapping ErrNoBinary that names
// the binaries the store holds.
func (q *Layer) MatchBinary(ctx context.Context, binary string) (*store.BinaryMatch, error) {
	if binary == "" {
		return nil, errors.New("an empty binary: give a path or a file name")
	}
	ps, err := q.s.Processes(ctx, 0)
	if err != nil {
		return nil, err
	}
	m := &store.BinaryMatch{}
	byPath := strings.Contains(binary, "/")
	if byPath {
		abs, err := filepath.Abs(binary)
		if err != nil {
			return nil, err
		}
		m.Paths = []string{abs}
		if id := symbols.BuildID(abs); id != "" {
			m.BuildIDs = []string{id}
		}
	}
	for _, p := range ps {
		if (byPath && p.Binary == m.Paths[0]) || (!byPath && filepath.Base(p.Binary) == binary) {
			m.Paths = append(m.Paths, p.Binary)
			if p.BuildID != "" {
				m.BuildIDs = append(m.BuildIDs, p.BuildID)
			}
		}
	}
	slices.Sort(m.Paths)
	m.Paths = slices.Compact(m.Paths)
	slices.Sort(m.BuildIDs)
	m.BuildIDs = slices.Compact(m.BuildIDs)
	known := map[string]bool{}
	for _, p := range ps {
		if slices.Contains(m.Paths, p.Binary) || (p.BuildID != "" && slices.Contains(m.BuildIDs, p.BuildID)) {
			return m, nil
		}
		known[p.Binary] = true
	}
	if len(known) == 0 {
		return nil, fmt.Errorf("%s: %w: the store has no traced processes (stores written before schema 7 do not record them)", validate.Clip(binary), ErrNoBinary)
	}
	names := make([]string, 0, len(known))
	for b := range known {
		names = append(names, b)
	}
	slices.Sort(names)
	const show = 10
	more := ""
	if len(names) > show {
		more = fmt.Sprintf(" and %d more", len(names)-show)
		names = names[:show]
	}
	return nil, fmt.Errorf("%s: %w; the store has processes of %s%s (`obs-agent query processes` lists them)", validate.Clip(binary), ErrNoBinary, strings.Join(names, ", "), more)
}
