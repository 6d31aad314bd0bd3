package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/config"
	"github.com/obs-agent/obs-agent/internal/daemon"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// defaultConfig is where the packaged unit (deploy/obs-agent.service)
// and `make install` put the config.
const defaultConfig = "/etc/obs-agent/obs-agent.yaml"

type daemonFlags struct {
	config    string
	readyFile string
	check     bool
}

func newDaemonCommand() *cobra.Command {
	f := &daemonFlags{}
	cmd := &cobra.Command{
		Use:   "daemon [--config FILE]",
		Short: "Run as a service: trace the targets of a config file until SIGTERM; SIGHUP reloads it",
		Long: `Daemon runs the agent from a config file (YAML; docs/config.md lists every
key and its default) until SIGTERM or SIGINT, which detach the probes, store
every record and end the session rows. SIGHUP reloads the file: a file that
does not load, or whose targets cannot be traced, is refused with a logged
error and the running config stays; unchanged targets keep running; changed
ones are stopped (everything they recorded is stored) and started again with
the new config. Under systemd (Type=notify) it reports READY and RELOADING.`,
		Example: `  sudo obs-agent daemon --config /etc/obs-agent/obs-agent.yaml
  obs-agent daemon --config ./obs-agent.yaml --check     # load and check the file, then exit
  sudo systemctl reload obs-agent                        # SIGHUP: apply the edited file`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validate.NotDir("ready-file", f.readyFile); err != nil {
				return err
			}
			runner := &daemon.AgentRunner{Log: slog.Default(), Version: versionString()}
			if f.check {
				c, err := config.Load(f.config)
				if err == nil {
					err = runner.Check(daemon.SetOf(c))
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d target)\n", f.config, len(c.Targets))
				return nil
			}
			if err := checkPrivileges(); err != nil {
				return err
			}
			return f.serve(cmd.Context(), runner)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", defaultConfig, "config file (YAML; see docs/config.md)")
	fl.StringVar(&f.readyFile, "ready-file", "", "write the config generation (1, then one more per applied reload) to this file each time a config is in force with every probe live")
	fl.BoolVar(&f.check, "check", false, "load and check the config (binaries read, patterns matched), print ok and exit, attaching nothing")
	return cmd
}

// serve runs the daemon until ctx is done (SIGTERM or SIGINT: see main).
func (f *daemonFlags) serve(ctx context.Context, runner daemon.Runner) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := slog.Default().With("component", "daemon")
	d := &daemon.Daemon{
		Runner:  runner,
		Log:     slog.Default(),
		StartUI: startDaemonUI,
		Applied: func(gen int) {
			if f.readyFile != "" {
				if err := safefile.WriteFileAtomic(f.readyFile, []byte(strconv.Itoa(gen)+"\n"), 0o644); err != nil {
					log.Error("write ready file", "err", err)
				}
			}
			sdNotify(log, "READY=1\nSTATUS=config generation "+strconv.Itoa(gen)+" in force")
		},
		Refused: func(err error) {
			sdNotify(log, "READY=1\nSTATUS=last reload refused: "+validate.ClipLine(strings.ReplaceAll(err.Error(), "\n", " ")))
		},
	}
	// A burst of SIGHUPs is one reload: the file is read after the last.
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				sdNotify(log, "RELOADING=1")
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	err := d.Serve(ctx, f.config, reload)
	sdNotify(log, "STOPPING=1")
	return err
}

// startDaemonUI serves the UI and writes its URL, which carries the access
// token, to a 0600 file (by default ui.url beside the store) rather than
// to the log, which more users may read than the store.
func startDaemonUI(ctx context.Context, db string, u config.UI) (func(), error) {
	var url bytes.Buffer
	wait, err := startUI(ctx, db, u.Listen, &url, "")
	if err != nil {
		return nil, err
	}
	file := u.URLFile
	if file == "" {
		file = filepath.Join(filepath.Dir(db), "ui.url")
	}
	if err := safefile.WriteFileAtomic(file, url.Bytes(), 0o600); err != nil {
		slog.Error("ui: cannot write the URL with its token", "component", "daemon", "file", file, "err", err)
	} else {
		slog.Info("ui: serving; its URL with the access token is in "+file, "component", "daemon", "listen", u.Listen)
	}
	return func() { wait() }, nil
}

// sdNotify sends a state to systemd when it started us as Type=notify
// (sd_notify(3): one datagram to $NOTIFY_SOCKET); without it, nothing.
func sdNotify(log *slog.Logger, state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		log.Warn("sd_notify", "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		log.Warn("sd_notify", "err", err)
	}
}
