package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/render"
	"github.com/obs-agent/obs-agent/internal/retention"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/validate"
)

func newRetentionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "Inspect and expire the store's hourly partitions",
		Long: `The store keeps each hour of calls, stats, resource samples and probe gaps
in its own tables. The agent drops hours older than its retention window
(6h by default) once a minute; these commands show the partitions and run a
pass by hand, optionally archiving each hour to its own file first.`,
		Example: `  obs-agent retention status
  obs-agent retention run --older-than 2h --archive /var/lib/obs-agent/archive`,
		SilenceUsage: true,
	}
	cmd.AddCommand(newRetentionStatusCommand(), newRetentionRunCommand())
	return groupCommand(cmd)
}

type retentionStatusFlags struct {
	db     string
	format string
}

func newRetentionStatusCommand() *cobra.Command {
	f := &retentionStatusFlags{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the retention window the store is kept to, and the partitions with their hours, row counts and sizes",
		Long: `Status prints, above the partitions, the retention window and archive
directory of each agent writing the store now (or, when none runs, of the
last one): what 'attach' and 'run' were given with --retention and
--archive. A store written only by agents older than schema 8 has no such
line. The JSON output lists only the partitions.`,
		Example: `  obs-agent retention status
  obs-agent retention status --db /tmp/obs.db --format json`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRetentionStatus(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().StringVar(&f.db, "db", store.DefaultPath(), "store file")
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table or json (JSON Lines)")
	return cmd
}

func runRetentionStatus(ctx context.Context, w io.Writer, f *retentionStatusFlags) error {
	format, err := render.ParseFormat(f.format, render.Table, render.JSON)
	if err != nil {
		return err
	}
	return withLayer(f.db, func(q *query.Layer) error {
		settings, err := q.RetentionSettings(ctx)
		if err != nil {
			return err
		}
		parts, err := q.Partitions(ctx)
		if err != nil {
			return err
		}
		if err := render.RetentionSettings(w, format, settings); err != nil {
			return err
		}
		return render.Partitions(w, format, parts)
	})
}

type retentionRunFlags struct {
	db        string
	olderThan time.Duration
	archive   string
	group     string
}

func newRetentionRunCommand() *cobra.Command {
	f := &retentionRunFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run one retention pass now",
		Long: `Run drops every hour whose end is at least --older-than ago, whole tables at
a time. With --archive DIR each hour is first copied to DIR/obs-YYYYMMDDHH.db
(or obs-YYYYMMDDHH-1.db and so on when that name is taken), a store of its
own: read it with 'obs-agent query calls --db FILE --since 0'. The hour is
dropped only once that file holds exactly its rows.
It is safe to run while the agent writes, and safe to interrupt: the next
pass finishes what an interrupted one left.`,
		Example: `  obs-agent retention run
  obs-agent retention run --older-than 24h --archive /srv/obs-archive`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRetentionRun(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().StringVar(&f.db, "db", store.DefaultPath(), "store file")
	cmd.Flags().DurationVar(&f.olderThan, "older-than", retention.DefaultWindow, "drop hours that ended at least this long ago")
	cmd.Flags().StringVar(&f.archive, "archive", "", "archive each hour to this directory before dropping it")
	registerGroup(cmd.Flags(), &f.group)
	return cmd
}

func runRetentionRun(ctx context.Context, w io.Writer, f *retentionRunFlags) error {
	if err := validate.First(
		retentionRange.Check("older-than", f.olderThan),
		validate.WritableDir("archive", f.archive),
	); err != nil {
		return err
	}
	if err := applyGroup(f.group); err != nil {
		return err
	}
	if _, err := os.Stat(f.db); errors.Is(err, fs.ErrNotExist) { // never create a store here
		return fmt.Errorf("no store at %s; run `obs-agent attach` first or pass --db", f.db)
	}
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	m := &retention.Manager{Store: s, ArchiveDir: f.archive, Logger: slog.Default().With("component", "retention")}
	res, err := m.Pass(ctx, f.olderThan)
	for _, a := range res.Cleaned {
		fmt.Fprintf(w, "removed half-written archive %s\n", a)
	}
	for _, h := range res.Dropped {
		fmt.Fprintf(w, "dropped %s\n", h.Format("2006-01-02T15:04Z"))
	}
	for _, a := range res.Archives {
		fmt.Fprintf(w, "archived to %s\n", a)
	}
	if res.Vacuumed > 0 {
		fmt.Fprintf(w, "returned %d free pages to the file system\n", res.Vacuumed)
	}
	if err == nil && len(res.Dropped) == 0 {
		fmt.Fprintf(w, "nothing older than %v\n", f.olderThan)
	}
	return err
}
