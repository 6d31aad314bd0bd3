package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/render"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/store"
)

// Bounds of the API's parameters: a page asks for what it can show, and a
// request must stay fast on a big store.
const (
	maxLimit     = 10000 // rows of calls, errors, stats, resources
	maxTree      = 20000 // calls of a tree
	defaultTree  = 2000
	defaultLimit = 100
	errorScan    = 2000 // error-lane calls grouped by /api/errors/groups
	errorGroups  = 100  // groups it returns, most frequent first
)

// badParam is a 400 naming the parameter at fault.
type badParam struct{ param, msg string }

func (e *badParam) Error() string { return e.param + ": " + e.msg }

func bad(param, format string, a ...any) error {
	return &badParam{param: param, msg: fmt.Sprintf(format, a...)}
}

// errNoCall is a 404.
var errNoCall = errors.New("no such call")

type apiFunc func(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error

func (s *Server) routes(mux *http.ServeMux) {
	api := map[string]apiFunc{
		"sessions":           apiSessions,
		"stats":              apiStats,
		"series":             apiSeries,
		"calls":              apiCalls,
		"errors":             apiErrors,
		"errors/groups":      apiErrorGroups,
		"resources":          apiResources,
		"gaps":               apiGaps,
		"retention":          apiRetention,
		"retention/settings": apiRetentionSettings,
		"partitions":         apiPartitions,
	}
	for name, fn := range api {
		mux.HandleFunc("/api/"+name, s.api(func(ctx context.Context, q *query.Layer, r *http.Request, w io.Writer) error {
			return fn(ctx, q, r.URL.Query(), w)
		}))
	}
	mux.HandleFunc("/api/events", s.events)
	mux.HandleFunc("/api/call/{id}", s.api(apiCall))
	mux.HandleFunc("/api/tree/{id}", s.api(apiTree))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "", "no API endpoint "+r.URL.Path)
	})
}

// api wraps an endpoint: it checks that only known parameters are given,
// opens the store, and maps errors to statuses.
func (s *Server) api(fn func(ctx context.Context, q *query.Layer, r *http.Request, w io.Writer) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := s.layer()
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "", err.Error())
			return
		}
		var buf bytes.Buffer
		start := time.Now()
		err = fn(r.Context(), q, r, &buf)
		var bp *badParam
		switch {
		case errors.As(err, &bp):
			writeError(w, http.StatusBadRequest, bp.param, bp.msg)
			return
		case errors.Is(err, errNoCall), errors.Is(err, store.ErrNotFound):
			writeError(w, http.StatusNotFound, "id", err.Error())
			return
		case err != nil:
			s.log.Warn("api request failed", "path", r.URL.Path, "err", err)
			writeError(w, http.StatusInternalServerError, "", err.Error())
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Server-Timing", fmt.Sprintf("q;dur=%.1f", float64(time.Since(start).Microseconds())/1000))
		w.Write(buf.Bytes())
	}
}

func writeError(w http.ResponseWriter, status int, param, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]string{"error": msg}
	if param != "" {
		body["param"] = param
	}
	json.NewEncoder(w).Encode(body)
}

// allowOnly rejects parameters an endpoint does not take, so a typo is a
// 400 rather than a silently ignored filter. "token" is the access token.
func allowOnly(p url.Values, names ...string) error {
	for k := range p {
		if k == "token" {
			continue
		}
		ok := false
		for _, n := range names {
			if k == n {
				ok = true
				break
			}
		}
		if !ok && len(names) == 0 {
			return bad(k, "unknown parameter (this endpoint takes none)")
		}
		if !ok {
			return bad(k, "unknown parameter (this endpoint takes %s)", strings.Join(names, ", "))
		}
	}
	return nil
}

// when reads since/until: a duration back from now (10m), an RFC 3339
// time, Unix milliseconds, or "" / "0" for unbounded.
func when(p url.Values, name string, now time.Time) (time.Time, error) {
	v := p.Get(name)
	if v == "" || v == "0" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, bad(name, "%q: give a positive duration back from now", v)
		}
		return now.Add(-d), nil
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 && ms < math.MaxInt64/1_000_000 {
		return time.UnixMilli(ms), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Time{}, bad(name, "%q: want a duration back from now (10m), an RFC 3339 time or Unix milliseconds", v)
}

func intParam(p url.Values, name string, def, lo, hi int) (int, error) {
	v := p.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, bad(name, "%q: want an integer in %d..%d", v, lo, hi)
	}
	return n, nil
}

// filter reads the filter parameters shared by the list endpoints.
func filter(p url.Values, maxRows int) (store.Filter, error) {
	var f store.Filter
	now := time.Now()
	var err error
	if f.Since, err = when(p, "since", now); err != nil {
		return f, err
	}
	if f.Until, err = when(p, "until", now); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, bad("until", "must be after since")
	}
	if v := p.Get("pid"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return f, bad("pid", "%q: want a process id (1..4294967295)", v)
		}
		f.PID = uint32(n)
	}
	f.Func = p.Get("func")
	if len(f.Func) > 1024 {
		return f, bad("func", "glob longer than 1024 bytes")
	}
	for _, s := range p["status"] {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			st, err := record.ParseStatus(part)
			if err != nil {
				return f, bad("status", "%v", err)
			}
			f.Status = append(f.Status, st)
		}
	}
	if v := p.Get("min_duration"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return f, bad("min_duration", "%q: want a duration such as 5ms", v)
		}
		f.MinDuration = d
	}
	if f.Limit, err = intParam(p, "limit", min(defaultLimit, maxRows), 0, maxRows); err != nil {
		return f, err
	}
	if f.Limit == 0 {
		f.Limit = maxRows // "all" is still bounded: the page shows what it can
	}
	return f, nil
}

var filterParams = []string{"since", "until", "pid", "func", "status", "min_duration", "limit"}

// jsonArray runs a JSON Lines renderer and writes its lines as one JSON
// array, so the API's objects are exactly `query --format json`'s.
func jsonArray(w io.Writer, fn func(io.Writer) error) error {
	var lines bytes.Buffer
	if err := fn(&lines); err != nil {
		return err
	}
	b := bytes.TrimRight(lines.Bytes(), "\n")
	w.Write([]byte{'['})
	if len(b) > 0 {
		w.Write(bytes.ReplaceAll(b, []byte{'\n'}, []byte{','}))
	}
	_, err := w.Write([]byte{']'})
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func timeOrNil(ns int64) *string {
	if ns == 0 {
		return nil
	}
	s := render.FormatTime(ns)
	return &s
}

type sessionRecord struct {
	ID            uint64  `json:"id"`
	PID           uint32  `json:"pid"`
	Binary        string  `json:"binary"`
	GoVersion     string  `json:"go_version"`
	Patterns      string  `json:"patterns"`
	Start         string  `json:"start"`
	End           *string `json:"end"`
	CallsRecorded uint64  `json:"calls_recorded"`
	CallsLost     uint64  `json:"calls_lost"`
	ExitReason    *string `json:"exit_reason"`
	// The session's --retention (null: not known, a session stored before
	// schema 8) and --archive (null: none).
	RetentionNs *int64  `json:"retention_ns"`
	Archive     *string `json:"archive"`
}

func apiSessions(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p); err != nil {
		return err
	}
	ss, err := q.Sessions(ctx)
	if err != nil {
		return err
	}
	out := make([]sessionRecord, len(ss))
	for i, s := range ss {
		out[i] = sessionRecord{ID: s.ID, PID: s.PID, Binary: s.Binary, GoVersion: s.GoVersion, Patterns: s.Patterns,
			Start: render.FormatTime(s.Start), End: timeOrNil(s.End), CallsRecorded: s.CallsRecorded, CallsLost: s.CallsLost,
			RetentionNs: retentionOrNil(s.Retention), Archive: strOrNil(s.ArchiveDir)}
		if s.ExitReason != "" {
			r := s.ExitReason
			out[i].ExitReason = &r
		}
	}
	return writeJSON(w, out)
}

type gapRecord struct {
	PID      uint32  `json:"pid"`
	Function string  `json:"function"`
	Start    string  `json:"start"`
	End      *string `json:"end"`
	Reason   string  `json:"reason"`
}

func gapRecords(gaps []record.Gap) []gapRecord {
	out := make([]gapRecord, len(gaps))
	for i, g := range gaps {
		out[i] = gapRecord{PID: g.PID, Function: g.Function, Start: render.FormatTime(g.Start), End: timeOrNil(g.End), Reason: g.Reason}
	}
	return out
}

func grouping(p url.Values) (result.Grouping, error) {
	v := p.Get("by")
	if v == "" {
		return result.ByFunction, nil
	}
	g, err := result.ParseGrouping(v, result.ByFunction, result.ByPackage, result.ByModule)
	if err != nil {
		return g, bad("by", "%q: want function, package or module", v)
	}
	return g, nil
}

// apiStats: {"rows": [query stats --format json rows], "gaps": [...]}.
func apiStats(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p, "since", "until", "pid", "func", "limit", "by"); err != nil {
		return err
	}
	by, err := grouping(p)
	if err != nil {
		return err
	}
	f, err := filter(p, maxLimit)
	if err != nil {
		return err
	}
	if p.Get("limit") == "" || p.Get("limit") == "0" {
		f.Limit = 0 // every group: the table sorts and filters them
	}
	rows, gaps, err := q.Stats(ctx, f, by)
	if err != nil {
		return err
	}
	var rowsJSON bytes.Buffer
	if err := jsonArray(&rowsJSON, func(lw io.Writer) error { return render.Stats(lw, render.JSON, by, rows, nil) }); err != nil {
		return err
	}
	return writeJSON(w, struct {
		By   string          `json:"by"`
		Rows json.RawMessage `json:"rows"`
		Gaps []gapRecord     `json:"gaps"`
	}{string(by), rowsJSON.Bytes(), gapRecords(gaps)})
}

type seriesRecord struct {
	Start     string  `json:"start"`
	End       string  `json:"end"`
	DataStart *string `json:"data_start"` // the aggregated intervals' span; null when none
	DataEnd   *string `json:"data_end"`
	Calls     uint64  `json:"calls"`
	Errors    uint64  `json:"errors"`
	Panics    uint64  `json:"panics"`
	Lost      uint64  `json:"lost"`
	P50       uint64  `json:"p50_ns"`
	P90       uint64  `json:"p90_ns"`
	P99       uint64  `json:"p99_ns"`
	Max       uint64  `json:"max_ns"`
}

// apiSeries: the exact aggregates of the matching functions per time
// bucket; since and until are required (a chart needs a time axis).
func apiSeries(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p, "since", "until", "pid", "func", "buckets"); err != nil {
		return err
	}
	f, err := filter(p, maxLimit)
	if err != nil {
		return err
	}
	if f.Since.IsZero() {
		return bad("since", "required: the start of the chart's time axis")
	}
	if f.Until.IsZero() {
		f.Until = time.Now()
		if !f.Until.After(f.Since) {
			return bad("since", "must be in the past")
		}
	}
	n, err := intParam(p, "buckets", 60, 1, query.MaxSeriesBuckets)
	if err != nil {
		return err
	}
	pts, err := q.Series(ctx, f, n)
	if err != nil {
		return err
	}
	out := make([]seriesRecord, len(pts))
	for i, pt := range pts {
		out[i] = seriesRecord{Start: render.FormatTime(pt.Start), End: render.FormatTime(pt.End), DataStart: timeOrNil(pt.DataStart), DataEnd: timeOrNil(pt.DataEnd), Calls: pt.Calls, Errors: pt.Errors,
			Panics: pt.Panics, Lost: pt.Lost(), P50: pt.P50, P90: pt.P90, P99: pt.P99, Max: pt.MaxNs}
	}
	return writeJSON(w, out)
}

// apiCalls: the matching calls, oldest first, or with order=newest the
// newest first (the overview's latest calls).
func apiCalls(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p, append(filterParams, "order")...); err != nil {
		return err
	}
	f, err := filter(p, maxLimit)
	if err != nil {
		return err
	}
	var calls []record.Call
	switch o := p.Get("order"); o {
	case "", "oldest":
		calls, err = q.Calls(ctx, f)
	case "newest":
		// The error lane's read runs newest first; given every status
		// it reads all calls, and stops after the limit.
		if len(f.Status) == 0 {
			f.Status = []record.Status{record.StatusOK, record.StatusError, record.StatusPanic, record.StatusUnfinished}
		}
		var chains []result.ErrorChain
		chains, err = q.Errors(ctx, f)
		for _, c := range chains {
			calls = append(calls, c.Call)
		}
	default:
		return bad("order", "%q: want oldest or newest", o)
	}
	if err != nil {
		return err
	}
	return jsonArray(w, func(lw io.Writer) error { return render.Calls(lw, render.JSON, calls) })
}

func errorFilter(p url.Values) (store.Filter, error) {
	f, err := filter(p, maxLimit)
	if err != nil {
		return f, err
	}
	for _, st := range f.Status {
		if st == record.StatusOK {
			return f, bad("status", "ok: errors lists error, panic and unfinished calls")
		}
	}
	return f, nil
}

func apiErrors(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p, filterParams...); err != nil {
		return err
	}
	f, err := errorFilter(p)
	if err != nil {
		return err
	}
	errs, err := q.Errors(ctx, f)
	if err != nil {
		return err
	}
	return jsonArray(w, func(lw io.Writer) error { return render.Errors(lw, render.JSON, errs) })
}

type errorGroupRecord struct {
	Function  string  `json:"function"`
	Status    string  `json:"status"`
	ErrorType *string `json:"error_type"`
	Error     *string `json:"error"`
	Count     int     `json:"count"`
	First     string  `json:"first"`
	Last      string  `json:"last"`
	LastID    uint64  `json:"last_id"`
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// apiErrorGroups groups the newest errorScan error-lane calls; "partial"
// says the range held more.
func apiErrorGroups(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p, "since", "until", "pid", "func", "status"); err != nil {
		return err
	}
	f, err := errorFilter(p)
	if err != nil {
		return err
	}
	gs, partial, err := q.ErrorGroups(ctx, f, errorScan)
	if err != nil {
		return err
	}
	total := len(gs)
	gs = gs[:min(len(gs), errorGroups)]
	out := make([]errorGroupRecord, len(gs))
	for i, g := range gs {
		out[i] = errorGroupRecord{Function: g.Function, Status: g.Status.String(), ErrorType: strOrNil(g.Type), Error: strOrNil(g.Text),
			Count: g.Count, First: render.FormatTime(g.First), Last: render.FormatTime(g.Last), LastID: g.LastID}
	}
	return writeJSON(w, struct {
		Groups  []errorGroupRecord `json:"groups"`
		Total   int                `json:"total_groups"`
		Scanned int                `json:"scanned"`
		Partial bool               `json:"partial"`
	}{out, total, errorScan, partial})
}

func apiResources(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p, "since", "until", "pid", "limit"); err != nil {
		return err
	}
	f, err := filter(p, maxLimit)
	if err != nil {
		return err
	}
	if p.Get("limit") == "" {
		f.Limit = maxLimit
	}
	rs, err := q.Resources(ctx, f)
	if err != nil {
		return err
	}
	return jsonArray(w, func(lw io.Writer) error { return render.Resources(lw, render.JSON, rs) })
}

func apiGaps(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p, "since", "until", "pid", "func", "limit"); err != nil {
		return err
	}
	f, err := filter(p, maxLimit)
	if err != nil {
		return err
	}
	gaps, err := q.Gaps(ctx, f)
	if err != nil {
		return err
	}
	return writeJSON(w, gapRecords(gaps))
}

// apiPartitions lists the partitions with rows and bytes: the writer keeps
// the counts and the sizes come from the b-trees' interior pages
// (internal/store/partinfo.go), so this is cheap on any store.
func apiPartitions(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p); err != nil {
		return err
	}
	parts, err := q.Partitions(ctx)
	if err != nil {
		return err
	}
	return jsonArray(w, func(lw io.Writer) error { return render.Partitions(lw, render.JSON, parts) })
}

type retentionRecord struct {
	Hour    string  `json:"hour"`
	State   string  `json:"state"`
	Archive *string `json:"archive"`
	Updated string  `json:"updated"`
}

func apiRetention(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p); err != nil {
		return err
	}
	log, err := q.RetentionLog(ctx)
	if err != nil {
		return err
	}
	out := make([]retentionRecord, len(log))
	for i, e := range log {
		out[i] = retentionRecord{Hour: e.Hour.UTC().Format(time.RFC3339), State: e.State, Archive: strOrNil(e.Archive),
			Updated: e.Updated.UTC().Format(time.RFC3339)}
	}
	return writeJSON(w, out)
}

func retentionOrNil(d time.Duration) *int64 {
	if d <= 0 {
		return nil
	}
	ns := int64(d)
	return &ns
}

type retentionSettingRecord struct {
	Session     uint64  `json:"session"`
	Running     bool    `json:"running"`
	RetentionNs int64   `json:"retention_ns"`
	Archive     *string `json:"archive"`
}

// apiRetentionSettings: the retention window and archive directory of the
// agents writing the store (query.Layer.RetentionSettings); [] when no
// session recorded them.
func apiRetentionSettings(ctx context.Context, q *query.Layer, p url.Values, w io.Writer) error {
	if err := allowOnly(p); err != nil {
		return err
	}
	settings, err := q.RetentionSettings(ctx)
	if err != nil {
		return err
	}
	out := make([]retentionSettingRecord, len(settings))
	for i, s := range settings {
		out[i] = retentionSettingRecord{Session: s.Session, Running: s.Running, RetentionNs: int64(s.Window), Archive: strOrNil(s.ArchiveDir)}
	}
	return writeJSON(w, out)
}

func callID(r *http.Request) (uint64, error) {
	v := r.PathValue("id")
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil || id == 0 {
		return 0, bad("id", "%q: want a positive call id", v)
	}
	return id, nil
}

// apiCall: {"call": call, "ancestors": [root first, ending with the parent]}.
func apiCall(ctx context.Context, q *query.Layer, r *http.Request, w io.Writer) error {
	if err := allowOnly(r.URL.Query()); err != nil {
		return err
	}
	id, err := callID(r)
	if err != nil {
		return err
	}
	chain, err := q.Ancestors(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w %d (expired, or not recorded)", errNoCall, id)
	}
	if err != nil {
		return err
	}
	recs := make([]render.CallRecord, len(chain))
	for i := range chain {
		recs[i] = render.NewCallRecord(&chain[i])
	}
	return writeJSON(w, struct {
		Call      render.CallRecord   `json:"call"`
		Ancestors []render.CallRecord `json:"ancestors"`
	}{recs[len(recs)-1], recs[:len(recs)-1]})
}

// apiTree: {"calls": [query tree --format json rows], "truncated": bool}.
func apiTree(ctx context.Context, q *query.Layer, r *http.Request, w io.Writer) error {
	p := r.URL.Query()
	if err := allowOnly(p, "limit"); err != nil {
		return err
	}
	id, err := callID(r)
	if err != nil {
		return err
	}
	limit, err := intParam(p, "limit", defaultTree, 1, maxTree)
	if err != nil {
		return err
	}
	t, err := q.Tree(ctx, id, limit)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w %d (expired, or not recorded)", errNoCall, id)
	}
	if err != nil {
		return err
	}
	var calls bytes.Buffer
	if err := jsonArray(&calls, func(lw io.Writer) error { return render.Tree(lw, render.JSON, t) }); err != nil {
		return err
	}
	return writeJSON(w, struct {
		Calls     json.RawMessage `json:"calls"`
		Truncated bool            `json:"truncated"`
	}{calls.Bytes(), t.Truncated})
}
