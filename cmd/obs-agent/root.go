package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// exitCoder is an error that carries the process exit code, such as the
// traced program's own code for `obs-agent run`.
type exitCoder interface {
	error
	ExitCode() int
}

func asExitCoder(err error, target *exitCoder) bool { return errors.As(err, target) }

// globalFlags are shared by every subcommand.
type globalFlags struct {
	debug bool
}

// statusKey holds the terminal's *agent.StatusLine in the command context.
type statusKey struct{}

// statusLine is the status line to draw on, nil when stderr is no terminal.
func statusLine(ctx context.Context) *agent.StatusLine {
	st, _ := ctx.Value(statusKey{}).(*agent.StatusLine)
	return st
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "obs-agent",
		Short: "Zero-code function tracer for Go programs",
		Long: `obs-agent attaches eBPF uprobes to the functions of a Go program, chosen by
glob patterns over their full symbol names, and records every call: its
duration, goroutine, parent call, and returned error or panic. Records go to a
local SQLite store that you query with 'obs-agent query'.

  sudo obs-agent attach --pid 4242 -f 'main.*' -f 'github.com/acme/api/*'
  sudo obs-agent run -f 'main.*' -- ./myservice --port 8080
  obs-agent list --binary ./myservice -f 'github.com/acme/*'
  obs-agent query calls --since 5m
  obs-agent ui                      # web dashboard; open the URL it prints`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			level := slog.LevelInfo
			if g.debug {
				level = slog.LevelDebug
			}
			// On a terminal, attach and run draw a live status line, and
			// log lines go through it so they never run into it.
			logOut := stderr
			if agent.IsTerminal(stderr) {
				st := agent.NewStatusLine(stderr)
				logOut = st
				cmd.SetContext(context.WithValue(cmd.Context(), statusKey{}, st))
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level})))
		},
	}
	// pflag's own errors ("invalid argument ... for --limit") quote the
	// value whole: clip it like every other echo of user text.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return errors.New(validate.ClipLine(err.Error()))
	})
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().BoolVar(&g.debug, "debug", false, "log debug detail to stderr")
	root.AddCommand(
		newAttachCommand(),
		newRunCommand(),
		newListCommand(),
		newQueryCommand(),
		newRetentionCommand(),
		newExportCommand(),
		newVersionCommand(),
		newUICommand(),
		newDaemonCommand(),
	)
	return root
}

// groupCommand makes a command that only holds subcommands (query,
// retention) report a wrong subcommand as such. Left to cobra, `obs-agent
// query bogus --db x` parses the flags first and says "unknown flag: --db",
// which points at the wrong word.
func groupCommand(cmd *cobra.Command) *cobra.Command {
	// Flags that belong to a subcommand are skipped, so the unknown
	// subcommand itself is what gets reported.
	cmd.FParseErrWhitelist.UnknownFlags = true
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2 // cobra's own default for the root
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %s for %q", validate.Quote(args[0]), c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return errors.New(msg + " (run '" + c.CommandPath() + " --help' for its commands)")
	}
	return cmd
}
