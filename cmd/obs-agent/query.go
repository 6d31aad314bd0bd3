package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/render"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// queryFlags are the filters every query subcommand shares.
type queryFlags struct {
	db          string
	since       string
	until       string
	pid         int // an int, so that -1 gets the range error
	fn          string
	status      []string
	minDuration time.Duration
	limit       int
	format      string
}

// defaultSince is the window a query looks back over unless --since says
// otherwise: recent enough to be fast on a busy store.
const defaultSince = "1h"

func (f *queryFlags) register(cmd *cobra.Command, filters bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store file (default: $OBS_AGENT_DB, /var/lib/obs-agent/obs.db as root, else ~/.local/state/obs-agent/obs.db)")
	if !filters {
		return
	}
	fl.StringVar(&f.since, "since", defaultSince, "start of the range: a duration back from now (10m, 2h) or an RFC 3339 time; 0 = all time")
	fl.StringVar(&f.until, "until", "", "end of the range (exclusive): a duration back from now or an RFC 3339 time; empty = now")
	fl.IntVar(&f.pid, "pid", 0, "only this process")
	fl.StringVar(&f.fn, "func", "", "only functions matching this glob ('*' any run, '?' one character; '[' is literal)")
	fl.StringSliceVar(&f.status, "status", nil, "only these outcomes: ok, error, panic, unfinished (repeat or comma-separate)")
	fl.DurationVar(&f.minDuration, "min-duration", 0, "only calls that took at least this long (e.g. 5ms)")
	fl.IntVar(&f.limit, "limit", 100, "at most this many rows (0 = all)")
}

// parseWhen reads a --since/--until value: a duration back from now, or an
// RFC 3339 time. "0" and "" mean unbounded.
func parseWhen(flag, v string, now time.Time) (time.Time, error) {
	if v == "" || v == "0" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--%s %s: give a positive duration back from now", flag, v)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, validate.Time(flag, v, t)
	}
	return time.Time{}, fmt.Errorf("--%s %s: want a duration such as 10m or 2h, or an RFC 3339 time such as 2026-11-27T10:00:00Z", flag, validate.Quote(v))
}

// Ranges of the numeric query flags.
var (
	limitRange       = validate.Range[int]{Min: 1, Special: []validate.Special[int]{{Value: 0, Means: "all"}}}
	minDurationRange = validate.Range[time.Duration]{Min: 0}
)

// check range-checks the query flags once the times are parsed: an --until
// at or before --since selects nothing, which is never what was meant.
func (f *queryFlags) check(out store.Filter) error {
	if !out.Since.IsZero() && !out.Until.IsZero() && !out.Until.After(out.Since) {
		return fmt.Errorf("--until %s (%s) is not after --since %s (%s): want an end later than the start",
			validate.Clip(f.until), out.Until.UTC().Format(time.RFC3339), validate.Clip(f.since), out.Since.UTC().Format(time.RFC3339))
	}
	pids := pidRange()
	pids.Special = []validate.Special[int]{{Value: 0, Means: "every process"}}
	return validate.First(
		pids.Check("pid", f.pid),
		minDurationRange.Check("min-duration", f.minDuration),
		limitRange.Check("limit", f.limit),
	)
}

func (f *queryFlags) filter() (store.Filter, error) {
	now := time.Now()
	var out store.Filter
	var err error
	if out.Since, err = parseWhen("since", f.since, now); err != nil {
		return out, err
	}
	if out.Until, err = parseWhen("until", f.until, now); err != nil {
		return out, err
	}
	for _, s := range f.status {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			st, err := record.ParseStatus(part)
			if err != nil {
				return out, fmt.Errorf("--status: %w", err)
			}
			out.Status = append(out.Status, st)
		}
	}
	if err := f.check(out); err != nil {
		return out, err
	}
	out.PID, out.Func, out.MinDuration, out.Limit = uint32(f.pid), f.fn, f.minDuration, f.limit
	return out, nil
}

// parsed checks the --format (table, json or csv) and the filter flags
// that the list-style queries share.
func (f *queryFlags) parsed() (render.Format, store.Filter, error) {
	format, err := render.ParseFormat(f.format, render.Table, render.JSON, render.CSV)
	if err != nil {
		return format, store.Filter{}, err
	}
	filter, err := f.filter()
	return format, filter, err
}

// withLayer opens the store read-only (never creating it), runs fn on its
// query layer and closes the store.
func withLayer(path string, fn func(q *query.Layer) error) error {
	q, err := query.Open(path)
	if err != nil {
		return err
	}
	defer q.Close()
	return fn(q)
}

func newQueryCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Query the recorded calls, errors, statistics and resources",
		Long: `Query reads the store that 'obs-agent attach' and 'obs-agent run' write.
It only reads: it never creates a store or changes one, and it can run while
the agent is writing. Time ranges default to the last hour (--since 1h);
--since 0 means all time. Times are shown in UTC.`,
		Example: `  obs-agent query calls --since 10m --func 'main.*'
  obs-agent query errors --format json
  obs-agent query stats --by package
  obs-agent query tree 1099511627777
  obs-agent query calls --db /archive/obs-2026112710.db --since 0`,
		SilenceUsage: true,
	}
	cmd.AddCommand(
		newQueryCallsCommand(),
		newQueryErrorsCommand(),
		newQueryStatsCommand(),
		newQueryTreeCommand(),
		newQueryResourcesCommand(),
		newQueryGroupsCommand(),
		newQueryProcessesCommand(),
	)
	return groupCommand(cmd)
}

type queryCallsFlags struct {
	queryFlags
	binaryFlag
}

func newQueryCallsCommand() *cobra.Command {
	f := &queryCallsFlags{}
	cmd := &cobra.Command{
		Use:   "calls",
		Short: "List calls, oldest first",
		Example: `  obs-agent query calls --since 10m
  obs-agent query calls --func 'github.com/acme/api/*' --min-duration 5ms --format json
  obs-agent query calls --status error,panic --pid 4242 --limit 0 --format csv
  obs-agent query calls --binary /srv/api/bin/api --since 24h`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQueryCalls(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table, json (JSON Lines) or csv")
	f.registerBinary(cmd)
	return cmd
}

func runQueryCalls(ctx context.Context, w io.Writer, f *queryCallsFlags) error {
	format, filter, err := f.parsed()
	if err != nil {
		return err
	}
	return f.withBinary(ctx, f.db, &filter, func(q *query.Layer) error {
		calls, err := q.Calls(ctx, filter)
		if err != nil {
			return err
		}
		return render.Calls(w, format, calls)
	})
}

type queryErrorsFlags struct {
	queryFlags
	binaryFlag
}

func newQueryErrorsCommand() *cobra.Command {
	f := &queryErrorsFlags{}
	cmd := &cobra.Command{
		Use:   "errors",
		Short: "List errors, panics and unfinished calls, newest first, with their parent chains",
		Example: `  obs-agent query errors --since 30m
  obs-agent query errors --status panic --format json`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQueryErrors(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table, json (JSON Lines) or csv")
	f.registerBinary(cmd)
	return cmd
}

func runQueryErrors(ctx context.Context, w io.Writer, f *queryErrorsFlags) error {
	format, filter, err := f.parsed()
	if err != nil {
		return err
	}
	for _, st := range filter.Status {
		if st == record.StatusOK {
			return errors.New("--status ok: errors lists error, panic and unfinished calls; use `query calls --status ok`")
		}
	}
	return f.withBinary(ctx, f.db, &filter, func(q *query.Layer) error {
		errs, err := q.Errors(ctx, filter)
		if err != nil {
			return err
		}
		return render.Errors(w, format, errs)
	})
}

type queryStatsFlags struct {
	queryFlags
	binaryFlag
	by string
}

func newQueryStatsCommand() *cobra.Command {
	f := &queryStatsFlags{}
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Per-function (or package, module) call counts, errors, loss and latency percentiles",
		Long: `Stats merges the exact per-interval aggregates the agent takes from the
kernel counters, so counts include calls that were sampled out or lost.
Percentiles come from log2 histograms: each is the upper bound of its bucket
(the true value is at most that and more than half of it), capped at the
exact maximum. Probe gaps (spans when a function's probes were paused) are
counted per row and listed under the table.

--binary sums the processes that ran one program, across its restarts: a
path selects the processes traced under that path and those of the same
build (build id) as the file there; a file name selects the processes whose
path ends in it ('query processes' lists them). Aggregates of an
'attach --exe' session that the kernel sampled out or could not hand to the
agent belong to no process (pid 0) and are not counted under --binary.`,
		Example: `  obs-agent query stats --since 6h
  obs-agent query stats --by module --format json
  obs-agent query stats --binary /srv/api/bin/api --since 24h`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQueryStats(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table, json (JSON Lines) or csv")
	cmd.Flags().StringVar(&f.by, "by", "function", "group by function, package or module")
	f.registerBinary(cmd)
	return cmd
}

func runQueryStats(ctx context.Context, w io.Writer, f *queryStatsFlags) error {
	by, err := result.ParseGrouping(f.by, result.ByFunction, result.ByPackage, result.ByModule)
	if err != nil {
		return err
	}
	format, filter, err := f.parsed()
	if err != nil {
		return err
	}
	return f.withBinary(ctx, f.db, &filter, func(q *query.Layer) error {
		rows, gaps, err := q.Stats(ctx, filter, by)
		if err != nil {
			return err
		}
		return render.Stats(w, format, by, rows, gaps)
	})
}

// maxBinary bounds --binary: a path, at most PATH_MAX.
const maxBinary = 4096

// binaryFlag is --binary of query calls, errors and stats: the processes
// that ran one program, across its restarts (query.Layer.MatchBinary).
type binaryFlag struct{ binary string }

func (b *binaryFlag) registerBinary(cmd *cobra.Command) {
	cmd.Flags().StringVar(&b.binary, "binary", "", "only the processes that ran this program, across restarts: its path, or its file name (see 'query processes')")
}

// withBinary is withLayer for a query that takes --binary: the flag is
// checked before the store is opened, and f selects the processes that ran
// the binary when fn runs.
func (b *binaryFlag) withBinary(ctx context.Context, db string, f *store.Filter, fn func(q *query.Layer) error) error {
	if err := b.checkBinary(); err != nil {
		return err
	}
	return withLayer(db, func(q *query.Layer) error {
		if err := b.applyBinary(ctx, q, f); err != nil {
			return err
		}
		return fn(q)
	})
}

// checkBinary checks --binary before the store is opened.
func (b *binaryFlag) checkBinary() error {
	switch v := b.binary; {
	case v == "":
		return nil
	case len(v) > maxBinary:
		return fmt.Errorf("--binary %s: %d bytes, want at most %d (a path or a file name)", validate.Clip(v), len(v), maxBinary)
	case strings.ContainsRune(v, 0):
		return fmt.Errorf("--binary %s: a NUL byte; want a path or a file name", validate.Quote(v))
	case strings.HasSuffix(v, "/"):
		return fmt.Errorf("--binary %s: a directory; want the program's path or file name", validate.Clip(v))
	}
	return nil
}

// applyBinary selects in f the processes that ran --binary; an error when
// none did.
func (b *binaryFlag) applyBinary(ctx context.Context, q *query.Layer, f *store.Filter) error {
	if b.binary == "" {
		return nil
	}
	m, err := q.MatchBinary(ctx, b.binary)
	if err != nil {
		return fmt.Errorf("--binary %w", err)
	}
	f.Binary = m
	return nil
}

type queryTreeFlags struct {
	queryFlags
}

func newQueryTreeCommand() *cobra.Command {
	f := &queryTreeFlags{}
	cmd := &cobra.Command{
		Use:   "tree ID",
		Short: "Show the call tree under one call, with durations and statuses",
		Long: `Tree prints call ID and every call beneath it, including calls on
goroutines it started, as an indented tree, children oldest first. Take IDs
from 'query calls' or 'query errors'.`,
		Example: `  obs-agent query tree 1099511627777
  obs-agent query tree 1099511627777 --limit 0 --format json`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQueryTree(cmd.Context(), cmd.OutOrStdout(), f, args[0])
		},
	}
	f.register(cmd, false)
	cmd.Flags().IntVar(&f.limit, "limit", 1000, "at most this many calls (0 = all)")
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table (indented tree) or json (JSON Lines with depth)")
	return cmd
}

func runQueryTree(ctx context.Context, w io.Writer, f *queryTreeFlags, arg string) error {
	format, err := render.ParseFormat(f.format, render.Table, render.JSON)
	if err != nil {
		return err
	}
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil || id == 0 {
		return fmt.Errorf("call id %s: want a positive integer from `query calls`", validate.Quote(arg))
	}
	if err := limitRange.Check("limit", f.limit); err != nil {
		return err
	}
	return withLayer(f.db, func(q *query.Layer) error {
		tree, err := q.Tree(ctx, id, f.limit)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no call %d in %s (expired, or not recorded)", id, q.Path())
		}
		if err != nil {
			return err
		}
		return render.Tree(w, format, tree)
	})
}

type queryResourcesFlags struct{ queryFlags }

func newQueryResourcesCommand() *cobra.Command {
	f := &queryResourcesFlags{}
	cmd := &cobra.Command{
		Use:   "resources",
		Short: "Resource samples of the traced processes: CPU, memory, threads, FDs, I/O, goroutines",
		Long: `Resources lists the samples taken of each traced process, oldest first.
A metric that could not be read is shown as '-' (null in JSON), never 0.`,
		Example: `  obs-agent query resources --pid 4242 --since 15m
  obs-agent query resources --format json --limit 0`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQueryResources(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store file")
	fl.StringVar(&f.since, "since", defaultSince, "start of the range: a duration back from now or an RFC 3339 time; 0 = all time")
	fl.StringVar(&f.until, "until", "", "end of the range (exclusive); empty = now")
	fl.IntVar(&f.pid, "pid", 0, "only this process")
	fl.IntVar(&f.limit, "limit", 100, "at most this many rows (0 = all)")
	fl.StringVar(&f.format, "format", "table", "output format: table, json (JSON Lines) or csv")
	return cmd
}

func runQueryResources(ctx context.Context, w io.Writer, f *queryResourcesFlags) error {
	format, filter, err := f.parsed()
	if err != nil {
		return err
	}
	return withLayer(f.db, func(q *query.Layer) error {
		rs, err := q.Resources(ctx, filter)
		if err != nil {
			return err
		}
		return render.Resources(w, format, rs)
	})
}

type queryGroupsFlags struct {
	queryFlags
	by string
}

func newQueryGroupsCommand() *cobra.Command {
	f := &queryGroupsFlags{}
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "Calls, errors and p99 latency rolled up by module or package",
		Example: `  obs-agent query groups
  obs-agent query groups --by package --format json`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQueryGroups(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table, json (JSON Lines) or csv")
	cmd.Flags().StringVar(&f.by, "by", "module", "group by module or package")
	return cmd
}

func runQueryGroups(ctx context.Context, w io.Writer, f *queryGroupsFlags) error {
	by, err := result.ParseGrouping(f.by, result.ByModule, result.ByPackage)
	if err != nil {
		return err
	}
	format, filter, err := f.parsed()
	if err != nil {
		return err
	}
	return withLayer(f.db, func(q *query.Layer) error {
		rows, _, err := q.Stats(ctx, filter, by)
		if err != nil {
			return err
		}
		return render.Groups(w, format, by, rows)
	})
}
