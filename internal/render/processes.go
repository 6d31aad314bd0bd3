package render

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/obs-agent/obs-agent/internal/result"
)

// dash shows an unknown table cell as "-".
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ProcessRecord is the JSON form of a traced process.
type ProcessRecord struct {
	Session    uint64  `json:"session"`
	PID        uint32  `json:"pid"`
	NSPID      *uint32 `json:"ns_pid"`
	Binary     string  `json:"binary"`
	BuildID    *string `json:"build_id"`
	Start      string  `json:"start"`
	End        *string `json:"end"`
	ExitReason *string `json:"exit_reason"`
}

// Processes writes the traced processes.
func Processes(w io.Writer, f Format, ps []result.Process) error {
	end := func(p result.Process) string {
		if p.End == 0 {
			return ""
		}
		return FormatTime(p.End)
	}
	nspid := func(p result.Process) string {
		if p.NSPID == 0 {
			return ""
		}
		return strconv.FormatUint(uint64(p.NSPID), 10)
	}
	switch f {
	case JSON:
		recs := make([]ProcessRecord, len(ps))
		for i, p := range ps {
			recs[i] = ProcessRecord{Session: p.Session, PID: p.PID, Binary: p.Binary, BuildID: strOrNil(p.BuildID),
				Start: FormatTime(p.Start), End: strOrNil(end(p)), ExitReason: strOrNil(p.ExitReason)}
			if p.NSPID != 0 {
				n := p.NSPID
				recs[i].NSPID = &n
			}
		}
		return jsonLines(w, recs)
	case CSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{"session", "pid", "ns_pid", "binary", "build_id", "start", "end", "exit_reason"})
		for _, p := range ps {
			cw.Write([]string{strconv.FormatUint(p.Session, 10), strconv.FormatUint(uint64(p.PID), 10), nspid(p), p.Binary, p.BuildID,
				FormatTime(p.Start), end(p), p.ExitReason})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START (UTC)\tEND (UTC)\tPID\tNS PID\tSESSION\tBINARY\tEXIT")
	for _, p := range ps {
		e := "-"
		if p.End != 0 {
			e = clock(p.End)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", clock(p.Start), e, p.PID, dash(nspid(p)), p.Session, p.Binary, dash(p.ExitReason))
	}
	return tw.Flush()
}
