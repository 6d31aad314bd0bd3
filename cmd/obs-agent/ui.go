package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/ui"
)

type uiFlags struct {
	db          string
	listen      string
	allowRemote bool
}

func newUICommand() *cobra.Command {
	f := &uiFlags{}
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web UI over a store: calls, call trees, errors, statistics, resources",
		Long: `UI serves a web dashboard over the store that 'obs-agent attach' and
'obs-agent run' write. It only reads (the store is opened read-only) and can
run while an agent writes. The first line on stdout is the URL to open: it
carries a random access token, generated at each start, without which every
request is refused. It listens on loopback unless --allow-remote is given.`,
		Example: `  obs-agent ui --db /var/lib/obs-agent/obs.db
  obs-agent ui --listen 127.0.0.1:0
  obs-agent ui --listen 0.0.0.0:7070 --allow-remote   # still needs the token`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUI(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store file")
	fl.StringVar(&f.listen, "listen", ui.DefaultListen, "HOST:PORT to serve on (port 0..65535, 0 = any free port)")
	fl.BoolVar(&f.allowRemote, "allow-remote", false, "allow a --listen address that is not loopback (the token is still required)")
	return cmd
}

func runUI(ctx context.Context, stdout io.Writer, f *uiFlags) error {
	if err := ui.CheckListen("listen", f.listen, f.allowRemote); err != nil {
		return err
	}
	return serveUI(ctx, f.db, f.listen, func(url string) { fmt.Fprintln(stdout, url) })
}

// serveUI serves the UI over the store at db until ctx ends; ready gets
// the URL with the token.
func serveUI(ctx context.Context, db, listen string, ready func(string)) error {
	s, err := ui.New(ui.Options{DB: db, Logger: slog.Default()})
	if err != nil {
		return err
	}
	defer s.Close()
	return ui.Serve(ctx, s, listen, ready)
}
