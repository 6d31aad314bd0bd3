package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/render"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/validate"
)

type queryProcessesFlags struct {
	db     string
	pid    int
	format string
}

func newQueryProcessesCommand() *cobra.Command {
	f := &queryProcessesFlags{}
	cmd := &cobra.Command{
		Use:   "processes",
		Short: "The traced processes: pid, binary, build id, start, end and why tracing ended",
		Long: `Processes lists every process the store has records of, oldest first: one
per 'attach --pid' or 'run' session, and one per process of the file an
'attach --exe' session traced. Use a pid with 'query calls --pid' and
'query stats --pid'.`,
		Example: `  obs-agent query processes
  obs-agent query processes --pid 4242 --format json`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQueryProcesses(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store file")
	fl.IntVar(&f.pid, "pid", 0, "only this process id")
	fl.StringVar(&f.format, "format", "table", "output format: table, json (JSON Lines) or csv")
	return cmd
}

func runQueryProcesses(ctx context.Context, w io.Writer, f *queryProcessesFlags) error {
	format, err := render.ParseFormat(f.format, render.Table, render.JSON, render.CSV)
	if err != nil {
		return err
	}
	pids := pidRange()
	pids.Special = []validate.Special[int]{{Value: 0, Means: "every process"}}
	if err := pids.Check("pid", f.pid); err != nil {
		return err
	}
	return withLayer(f.db, func(q *query.Layer) error {
		ps, err := q.Processes(ctx, uint32(f.pid))
		if err != nil {
			return err
		}
		return render.Processes(w, format, ps)
	})
}
