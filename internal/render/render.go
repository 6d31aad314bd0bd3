// Package render writes the answers of the query layer (package result)
// and records for the `obs-agent query` and `obs-agent retention` commands
// as aligned tables, JSON Lines or CSV. It reads nothing: it never imports
// the store, so any front end can render what the query layer returns.
//
// JSON Lines output is one object per line with stable snake_case keys;
// times are RFC 3339 in UTC with nine fractional digits; a value that is
// unknown or absent is null, never 0 or "".
package render

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// Format is an output format.
type Format string

// Output formats.
const (
	Table Format = "table"
	JSON  Format = "json" // JSON Lines
	CSV   Format = "csv"
)

// ParseFormat checks a --format value against the formats a command allows.
func ParseFormat(s string, allowed ...Format) (Format, error) {
	for _, f := range allowed {
		if string(f) == s {
			return f, nil
		}
	}
	names := make([]string, len(allowed))
	for i, f := range allowed {
		names[i] = string(f)
	}
	return "", fmt.Errorf("--format %s: want %s", validate.Quote(s), strings.Join(names, ", "))
}

// TimeLayout is RFC 3339 with nanoseconds.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// FormatTime renders Unix nanoseconds as RFC 3339 UTC with nanoseconds.
func FormatTime(ns int64) string { return time.Unix(0, ns).UTC().Format(TimeLayout) }

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// CallRecord is the JSON form of a call.
type CallRecord struct {
	ID             uint64  `json:"id"`
	ParentID       *uint64 `json:"parent_id"`
	PID            uint32  `json:"pid"`
	GoID           uint64  `json:"goid"`
	Function       string  `json:"function"`
	Start          string  `json:"start"`
	DurationNs     int64   `json:"duration_ns"`
	Status         string  `json:"status"`
	Error          *string `json:"error"`
	ErrorType      *string `json:"error_type"`
	ErrorTruncated bool    `json:"error_truncated"`
}

// NewCallRecord converts a call for JSON.
func NewCallRecord(c *record.Call) CallRecord {
	r := CallRecord{ID: c.ID, PID: c.PID, GoID: c.GoID, Function: c.Function, Start: FormatTime(c.Start),
		DurationNs: c.Duration, Status: c.Status.String(), Error: strOrNil(c.Error), ErrorType: strOrNil(c.ErrorType),
		ErrorTruncated: c.ErrorTruncated}
	if c.ParentID != 0 {
		p := c.ParentID
		r.ParentID = &p
	}
	return r
}

func jsonLines[T any](w io.Writer, items []T) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for i := range items {
		if err := enc.Encode(items[i]); err != nil {
			return err
		}
	}
	return nil
}

// lineBreaks are escaped in tables: an error's text can span lines
// (errors.Join), and a table row must not.
var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`)

func errText(c *record.Call) string {
	s := lineBreaks.Replace(c.Error)
	if c.ErrorTruncated {
		s += "…"
	}
	if c.ErrorType != "" {
		if s == "" {
			return c.ErrorType
		}
		return c.ErrorType + ": " + s
	}
	return s
}

// Dur renders a duration in ns compactly (1.5ms, 230ns).
func Dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Microsecond:
		return strconv.FormatInt(ns, 10) + "ns"
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s"
}

func clock(ns int64) string { return time.Unix(0, ns).UTC().Format("2006-01-02 15:04:05.000000") }

// Calls writes calls.
func Calls(w io.Writer, f Format, calls []record.Call) error {
	switch f {
	case JSON:
		recs := make([]CallRecord, len(calls))
		for i := range calls {
			recs[i] = NewCallRecord(&calls[i])
		}
		return jsonLines(w, recs)
	case CSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{"id", "parent_id", "pid", "goid", "function", "start", "duration_ns", "status", "error_type", "error"})
		for i := range calls {
			c := &calls[i]
			parent := ""
			if c.ParentID != 0 {
				parent = strconv.FormatUint(c.ParentID, 10)
			}
			cw.Write([]string{strconv.FormatUint(c.ID, 10), parent, strconv.FormatUint(uint64(c.PID), 10),
				strconv.FormatUint(c.GoID, 10), c.Function, FormatTime(c.Start), strconv.FormatInt(c.Duration, 10),
				c.Status.String(), c.ErrorType, c.Error})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START (UTC)\tDURATION\tSTATUS\tPID\tGOID\tFUNCTION\tID\tERROR")
	for i := range calls {
		c := &calls[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", clock(c.Start), Dur(c.Duration), c.Status, c.PID, c.GoID, c.Function, c.ID, errText(c))
	}
	return tw.Flush()
}

type chainLink struct {
	ID       uint64 `json:"id"`
	Function string `json:"function"`
}

type errorRecord struct {
	CallRecord
	Chain []chainLink `json:"chain"`
}

// Errors writes error-lane calls with their chains.
func Errors(w io.Writer, f Format, errs []result.ErrorChain) error {
	switch f {
	case JSON:
		recs := make([]errorRecord, len(errs))
		for i := range errs {
			recs[i] = errorRecord{CallRecord: NewCallRecord(&errs[i].Call), Chain: []chainLink{}}
			for _, p := range errs[i].Chain {
				recs[i].Chain = append(recs[i].Chain, chainLink{ID: p.ID, Function: p.Function})
			}
		}
		return jsonLines(w, recs)
	case CSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{"id", "pid", "function", "start", "duration_ns", "status", "error_type", "error", "chain"})
		for _, e := range errs {
			c := &e.Call
			cw.Write([]string{strconv.FormatUint(c.ID, 10), strconv.FormatUint(uint64(c.PID), 10), c.Function,
				FormatTime(c.Start), strconv.FormatInt(c.Duration, 10), c.Status.String(), c.ErrorType, c.Error, chainText(e)})
		}
		cw.Flush()
		return cw.Error()
	}
	for _, e := range errs {
		c := &e.Call
		fmt.Fprintf(w, "%s  %-10s %s  pid %d  goid %d  id %d  %s\n", clock(c.Start), c.Status, c.Function, c.PID, c.GoID, c.ID, Dur(c.Duration))
		if t := errText(c); t != "" {
			fmt.Fprintf(w, "    error: %s\n", t)
		}
		fmt.Fprintf(w, "    chain: %s\n", chainText(e))
	}
	return nil
}

func chainText(e result.ErrorChain) string {
	var parts []string
	for _, p := range e.Chain {
		parts = append(parts, p.Function)
	}
	parts = append(parts, e.Call.Function)
	return strings.Join(parts, " > ")
}

// Stats writes per-group aggregates; by names the key. In table mode the
// gaps are listed under the table.
func Stats(w io.Writer, f Format, by result.Grouping, rows []result.StatsRow, gaps []record.Gap) error {
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			m := map[string]any{
				string(by): r.Key, "calls": r.Calls, "errors": r.Errors, "panics": r.Panics, "recorded": r.Recorded,
				"lost": r.Lost(), "sampled": r.Sampled, "dropped": r.Dropped, "p50_ns": r.P50, "p90_ns": r.P90,
				"p99_ns": r.P99, "max_ns": r.MaxNs, "mean_ns": r.MeanNs, "gaps": r.Gaps,
				"gap_ms": float64(r.GapTime) / 1e6,
			}
			if len(r.Sinks) > 0 {
				sinks := map[string]any{}
				for _, c := range r.Sinks {
					sinks[c.Sink] = map[string]uint64{"written": c.Written, "lost": c.Dropped, "errors_lost": c.ErrorsLost}
				}
				m["sinks"] = sinks
			}
			if by == result.ByModule && r.Key == "" {
				m[string(by)] = nil
			}
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return nil
	case CSV:
		cw := csv.NewWriter(w)
		sinks := sinkNames(rows)
		head := []string{string(by), "calls", "errors", "panics", "recorded", "lost", "sampled", "dropped", "p50_ns", "p90_ns", "p99_ns", "max_ns", "mean_ns", "gaps", "gap_ms"}
		for _, k := range sinks {
			head = append(head, k+"_written", k+"_lost", k+"_errors_lost")
		}
		cw.Write(head)
		u := func(v uint64) string { return strconv.FormatUint(v, 10) }
		for _, r := range rows {
			rec := []string{r.Key, u(r.Calls), u(r.Errors), u(r.Panics), u(r.Recorded), u(r.Lost()), u(r.Sampled), u(r.Dropped),
				u(r.P50), u(r.P90), u(r.P99), u(r.MaxNs), u(r.MeanNs), strconv.Itoa(r.Gaps), strconv.FormatFloat(float64(r.GapTime)/1e6, 'f', 3, 64)}
			for _, k := range sinks {
				c := sinkCount(r, k)
				rec = append(rec, u(c.Written), u(c.Dropped), u(c.ErrorsLost))
			}
			cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "CALLS\tERRORS\tPANICS\tRECORDED\tLOST\tP50\tP90\tP99\tMAX\tMEAN\tGAPS\t %s\n", strings.ToUpper(string(by)))
	for _, r := range rows {
		key := r.Key
		if key == "" {
			key = "(unknown)"
		}
		gap := "-"
		if r.Gaps > 0 {
			gap = fmt.Sprintf("%d/%s", r.Gaps, Dur(int64(r.GapTime)))
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t %s\n", r.Calls, r.Errors, r.Panics, r.Recorded, r.Lost(),
			Dur(int64(r.P50)), Dur(int64(r.P90)), Dur(int64(r.P99)), Dur(int64(r.MaxNs)), Dur(int64(r.MeanNs)), gap, key)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\npercentiles are log2-bucket upper bounds (true value <= shown < 2x), capped at the exact max")
	if err := sinkTable(w, by, rows); err != nil {
		return err
	}
	if len(gaps) > 0 {
		fmt.Fprintln(w, "\nprobe gaps (calls in these spans were not traced):")
		gw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(gw, "START (UTC)\tEND (UTC)\tLENGTH\tPID\tFUNCTION\tREASON")
		for _, g := range gaps {
			end, length := "open", "-"
			if g.End != 0 {
				end, length = clock(g.End), Dur(g.End-g.Start)
			}
			fmt.Fprintf(gw, "%s\t%s\t%s\t%d\t%s\t%s\n", clock(g.Start), end, length, g.PID, g.Function, g.Reason)
		}
		return gw.Flush()
	}
	return nil
}

// sinkNames are the sinks any row has an account of, sorted.
func sinkNames(rows []result.StatsRow) []string {
	var names []string
	for _, r := range rows {
		for _, c := range r.Sinks {
			if !slices.Contains(names, c.Sink) {
				names = append(names, c.Sink)
			}
		}
	}
	slices.Sort(names)
	return names
}

// sinkCount is row r's account of sink k (zero when it has none).
func sinkCount(r result.StatsRow, k string) result.SinkCount {
	for _, c := range r.Sinks {
		if c.Sink == k {
			return c
		}
	}
	return result.SinkCount{Sink: k}
}

// sinkTable lists each sink's account per row under the stats table, when
// there is a sink besides the store (the store's own columns are above).
func sinkTable(w io.Writer, by result.Grouping, rows []result.StatsRow) error {
	sinks := sinkNames(rows)
	if len(sinks) == 0 || (len(sinks) == 1 && sinks[0] == "store") {
		return nil
	}
	fmt.Fprintln(w, "\nrecords per sink (whole sessions that overlap the range, as each sink counted them when its session ended):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "SINK\tWRITTEN\tLOST\tOK NOT SENT\tERRORS LOST\t %s\n", strings.ToUpper(string(by)))
	for _, k := range sinks {
		for _, r := range rows {
			c := sinkCount(r, k)
			if c.Written+c.Dropped == 0 {
				continue
			}
			key := r.Key
			if key == "" {
				key = "(unknown)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t %s\n", k, c.Written, c.Dropped, c.Dropped-c.ErrorsLost, c.ErrorsLost, key)
		}
	}
	return tw.Flush()
}

// Groups writes the package or module roll-up: key "group" for modules,
// "package" for packages, with calls, errors and p99_ns.
func Groups(w io.Writer, f Format, by result.Grouping, rows []result.StatsRow) error {
	key := "group"
	if by == result.ByPackage {
		key = "package"
	}
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			m := map[string]any{key: r.Key, "calls": r.Calls, "errors": r.Errors + r.Panics, "p99_ns": r.P99}
			if r.Key == "" {
				m[key] = nil
			}
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return nil
	case CSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{key, "calls", "errors", "p99_ns"})
		for _, r := range rows {
			cw.Write([]string{r.Key, strconv.FormatUint(r.Calls, 10), strconv.FormatUint(r.Errors+r.Panics, 10), strconv.FormatUint(r.P99, 10)})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tCALLS\tERRORS\tP99\n", strings.ToUpper(key))
	for _, r := range rows {
		k := r.Key
		if k == "" {
			k = "(unknown)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", k, r.Calls, r.Errors+r.Panics, Dur(int64(r.P99)))
	}
	return tw.Flush()
}

type treeRecord struct {
	CallRecord
	Depth int `json:"depth"`
}

// Tree writes a subtree in pre-order.
func Tree(w io.Writer, f Format, t result.Tree) error {
	calls, depth := t.Calls, t.Depth
	if f == JSON {
		recs := make([]treeRecord, len(calls))
		for i := range calls {
			recs[i] = treeRecord{NewCallRecord(&calls[i]), depth[i]}
		}
		return jsonLines(w, recs)
	}
	for i := range calls {
		c := &calls[i]
		line := fmt.Sprintf("%s%s  %s  %s  [id %d, goid %d]", strings.Repeat("  ", depth[i]), c.Function, Dur(c.Duration), c.Status, c.ID, c.GoID)
		if t := errText(c); t != "" {
			line += "  " + t
		}
		fmt.Fprintln(w, line)
	}
	if t.Truncated {
		fmt.Fprintln(w, "... (truncated; raise --limit)")
	}
	return nil
}

// SampleRecord is the JSON form of a resource sample.
type SampleRecord struct {
	PID        uint32   `json:"pid"`
	Time       string   `json:"time"`
	CPUPercent *float64 `json:"cpu_percent"`
	RSSBytes   *uint64  `json:"rss_bytes"`
	VMSBytes   *uint64  `json:"vms_bytes"`
	Threads    *int64   `json:"threads"`
	OpenFDs    *int64   `json:"open_fds"`
	ReadBytes  *uint64  `json:"read_bytes"`
	WriteBytes *uint64  `json:"write_bytes"`
	VolCtx     *uint64  `json:"voluntary_ctx_switches"`
	InvCtx     *uint64  `json:"involuntary_ctx_switches"`
	Goroutines *int64   `json:"goroutines"`
}

func opt[T any](p *T) string {
	if p == nil {
		return ""
	}
	return fmt.Sprint(*p)
}

// Resources writes resource samples.
func Resources(w io.Writer, f Format, rs []record.ResourceSample) error {
	switch f {
	case JSON:
		recs := make([]SampleRecord, len(rs))
		for i, r := range rs {
			recs[i] = SampleRecord{PID: r.PID, Time: FormatTime(r.Time), CPUPercent: r.CPUPercent, RSSBytes: r.RSSBytes,
				VMSBytes: r.VMSBytes, Threads: r.Threads, OpenFDs: r.OpenFDs, ReadBytes: r.ReadBytes, WriteBytes: r.WriteBytes,
				VolCtx: r.VolCtxSwitches, InvCtx: r.InvCtxSwitches, Goroutines: r.Goroutines}
		}
		return jsonLines(w, recs)
	case CSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{"pid", "time", "cpu_percent", "rss_bytes", "vms_bytes", "threads", "open_fds", "read_bytes", "write_bytes", "voluntary_ctx_switches", "involuntary_ctx_switches", "goroutines"})
		for _, r := range rs {
			cw.Write([]string{strconv.FormatUint(uint64(r.PID), 10), FormatTime(r.Time), opt(r.CPUPercent), opt(r.RSSBytes), opt(r.VMSBytes),
				opt(r.Threads), opt(r.OpenFDs), opt(r.ReadBytes), opt(r.WriteBytes), opt(r.VolCtxSwitches), opt(r.InvCtxSwitches), opt(r.Goroutines)})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME (UTC)\tPID\tCPU%\tRSS\tVMS\tTHREADS\tFDS\tREAD\tWRITE\tVCSW\tIVCSW\tGOROUTINES")
	for _, r := range rs {
		cpu := "-"
		if r.CPUPercent != nil {
			cpu = strconv.FormatFloat(*r.CPUPercent, 'f', 1, 64)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clock(r.Time), r.PID, cpu, dash(opt(r.RSSBytes)), dash(opt(r.VMSBytes)),
			dash(opt(r.Threads)), dash(opt(r.OpenFDs)), dash(opt(r.ReadBytes)), dash(opt(r.WriteBytes)), dash(opt(r.VolCtxSwitches)),
			dash(opt(r.InvCtxSwitches)), dash(opt(r.Goroutines)))
	}
	return tw.Flush()
}

type partitionRecord struct {
	Partition string `json:"partition"`
	Kind      string `json:"kind"`
	Start     string `json:"start"`
	End       string `json:"end"`
	Rows      int64  `json:"rows"`
	Bytes     *int64 `json:"bytes"`
}

// RetentionSettings writes, for a table, one line per agent writing the
// store with the window and archive it keeps the store to (retention
// status, above the partitions). JSON has no line for them: `retention
// status --format json` stays one partition per line, and the settings are
// in the UI API's /api/retention/settings.
func RetentionSettings(w io.Writer, f Format, settings []result.RetentionSetting) error {
	if f == JSON {
		return nil
	}
	for _, s := range settings {
		archive := "hours are dropped without an archive"
		if s.ArchiveDir != "" {
			archive = "archived to " + s.ArchiveDir + " before the drop"
		}
		state := "ended; nothing drops hours until an agent writes the store again"
		if s.Running {
			state = "running"
		}
		if _, err := fmt.Fprintf(w, "retention: %s, %s (session %d, %s)\n", s.Window, archive, s.Session, state); err != nil {
			return err
		}
	}
	return nil
}

// Partitions writes the partition list (retention status).
func Partitions(w io.Writer, f Format, parts []result.Partition) error {
	if f == JSON {
		recs := make([]partitionRecord, len(parts))
		for i, p := range parts {
			recs[i] = partitionRecord{Partition: p.Name, Kind: p.Kind, Start: p.Start.UTC().Format(time.RFC3339), End: p.End.UTC().Format(time.RFC3339), Rows: p.Rows}
			if p.Bytes >= 0 {
				b := p.Bytes
				recs[i].Bytes = &b
			}
		}
		return jsonLines(w, recs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tKIND\tSTART (UTC)\tEND (UTC)\tROWS\tBYTES")
	var rows, bytes int64
	for _, p := range parts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", p.Name, p.Kind, p.Start.Format(time.RFC3339), p.End.Format(time.RFC3339), p.Rows, p.Bytes)
		rows += p.Rows
		bytes += max(p.Bytes, 0)
	}
	fmt.Fprintf(tw, "total\t\t\t\t%d\t%d\n", rows, bytes)
	return tw.Flush()
}
