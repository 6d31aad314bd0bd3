package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

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
			if err := ui.CheckListen("listen", f.listen, f.allowRemote); err != nil {
				return err
			}
			// A store that isn't there is a typo here (unlike --ui, which
			// starts before the agent creates it).
			if _, err := os.Stat(f.db); err != nil {
				return fmt.Errorf("no store at %s; run `obs-agent attach` or `obs-agent run` first, or pass --db", f.db)
			}
			wait, err := startUI(cmd.Context(), f.db, f.listen, cmd.OutOrStdout(), "")
			if err != nil {
				return err
			}
			return wait()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store file")
	fl.StringVar(&f.listen, "listen", ui.DefaultListen, "HOST:PORT to serve on (port 0..65535, 0 = any free port)")
	fl.BoolVar(&f.allowRemote, "allow-remote", false, "allow a --listen address that is not loopback (the token is still required)")
	return cmd
}

// startUI listens on addr (an error now if it can't), prints the URL with
// the token as one line to w (after prefix), and serves the UI over the
// store at db until ctx ends; wait returns the server's end.
func startUI(ctx context.Context, db, addr string, w io.Writer, prefix string) (wait func() error, err error) {
	s, err := ui.New(ui.Options{DB: db, Logger: slog.Default()})
	if err != nil {
		return nil, err
	}
	ln, err := ui.Listen(addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(w, prefix+s.URL(ln))
	done := make(chan error, 1)
	go func() {
		err := ui.Serve(ctx, s, ln)
		s.Close()
		done <- err
	}()
	return func() error { return <-done }, nil
}

// startUI serves the UI during an attach or run session when --ui is set;
// stop ends it once tracing is over.
func (f *traceFlags) startUI(cmd *cobra.Command) (stop func(), err error) {
	if f.ui == "" {
		return func() {}, nil
	}
	if err := ui.CheckListen("ui", f.ui, false); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(cmd.Context())
	wait, err := startUI(ctx, f.db, f.ui, cmd.ErrOrStderr(), "obs-agent: UI at ")
	if err != nil {
		cancel()
		return nil, err
	}
	return func() { cancel(); wait() }, nil
}
