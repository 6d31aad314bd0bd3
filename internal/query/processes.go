package query

import (
	"context"

	"github.com/obs-agent/obs-agent/internal/result"
)

// Processes returns the traced processes, oldest first; pid 0 means every
// one. A pid the kernel handed out again shows once per process.
func (q *Layer) Processes(ctx context.Context, pid uint32) ([]result.Process, error) {
	ps, err := q.s.Processes(ctx, pid)
	if err != nil {
		return nil, err
	}
	out := make([]result.Process, len(ps))
	for i, p := range ps {
		out[i] = result.Process{Session: p.Session, PID: p.PID, NSPID: p.NSPID, Binary: p.Binary, BuildID: p.BuildID,
			Start: p.Start, End: p.End, ExitReason: p.ExitReason}
	}
	return out, nil
}
