package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/otlp"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/validate"
)

func newExportCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Send what a store holds to another system",
		Long: `Export reads a store (the live one or an archived hour) and sends its
records elsewhere. It only reads the store.`,
		Example:      `  obs-agent export otlp --db /var/lib/obs-agent/archive/obs-2026112710.db --since 0`,
		SilenceUsage: true,
	}
	cmd.AddCommand(newExportOTLPCommand())
	return cmd
}

type exportOTLPFlags struct {
	db, since, until string
	endpoint         string
	headers          []string
	caFile           string
	compression      string
	state            string
	serviceName      string
	batch            int
	timeout          time.Duration
	retryFor         time.Duration
}

func newExportOTLPCommand() *cobra.Command {
	f := &exportOTLPFlags{}
	cmd := &cobra.Command{
		Use:   "otlp",
		Short: "Send the recorded calls as OpenTelemetry spans over OTLP/HTTP",
		Long: `Send every call the store holds in [--since, --until) as one span, over
OTLP/HTTP (protobuf, gzip unless --compression none), to an OpenTelemetry
Collector or any OTLP backend. A trace is the tree under one root call, goroutines included; span
and trace ids are derived from the session and the call, so sending the same
calls again gives the same ids.

The endpoint comes from --endpoint, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
(used as is), else OTEL_EXPORTER_OTLP_ENDPOINT (with /v1/traces appended),
else http://localhost:4318/v1/traces. An --endpoint without a path gets
/v1/traces. Headers come from OTEL_EXPORTER_OTLP_HEADERS and --header (which
wins); service.name from --service-name, else OTEL_SERVICE_NAME, else the
traced binary's name.

Progress is saved in --state after every accepted request: run the same
command again after a failure and it sends the rest, nothing twice.`,
		Example: `  obs-agent export otlp --since 1h --endpoint http://collector:4318
  obs-agent export otlp --db archive/obs-2026112710.db --since 0 \
      --endpoint https://otlp.example.com --header "authorization=Bearer $TOKEN"`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExportOTLP(cmd.Context(), cmd.OutOrStdout(), f, os.Getenv)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store file to read")
	fl.StringVar(&f.since, "since", "", "start of the range (required): a duration back from now (2h), an RFC 3339 time, or 0 for all time")
	fl.StringVar(&f.until, "until", "", "end of the range: a duration back from now or an RFC 3339 time (default: no end)")
	fl.StringVar(&f.endpoint, "endpoint", "", "OTLP/HTTP endpoint URL, e.g. http://collector:4318 (default: from the OTEL_EXPORTER_OTLP_* variables)")
	fl.StringArrayVar(&f.headers, "header", nil, "request header key=value (repeatable), e.g. authorization=Bearer xyz")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file of CA certificates trusted besides the system roots")
	fl.StringVar(&f.compression, "compression", "", "request compression, gzip or none (default: OTEL_EXPORTER_OTLP_TRACES_COMPRESSION or OTEL_EXPORTER_OTLP_COMPRESSION, else gzip)")
	fl.StringVar(&f.state, "state", "", "progress file (default: <db>.otlp-state)")
	fl.StringVar(&f.serviceName, "service-name", "", "service.name of the spans (default: OTEL_SERVICE_NAME, else the binary's name)")
	fl.IntVar(&f.batch, "batch", 512, "spans per request (1 to 10000)")
	fl.DurationVar(&f.timeout, "timeout", otlp.DefaultTimeout, "timeout of one request (1s to 10m)")
	fl.DurationVar(&f.retryFor, "retry-for", otlp.DefaultMaxElapsed, "give up on a request after retrying this long (0 to 24h; 0 = one attempt)")
	return cmd
}

// options checks every flag and combines them with the environment.
func (f *exportOTLPFlags) options(getenv func(string) string, now time.Time) (otlp.Config, *otlp.StoreExport, error) {
	x := &otlp.StoreExport{BatchSize: f.batch, StatePath: f.state, Version: versionString()}
	if f.since == "" {
		return otlp.Config{}, nil, errors.New("--since is required: a duration back from now (2h), an RFC 3339 time, or 0 for all time")
	}
	var err error
	if x.Since, err = parseWhen("since", f.since, now); err != nil {
		return otlp.Config{}, nil, err
	}
	if x.Until, err = parseWhen("until", f.until, now); err != nil {
		return otlp.Config{}, nil, err
	}
	if !x.Until.IsZero() && !x.Until.After(x.Since) {
		return otlp.Config{}, nil, fmt.Errorf("--until %s is not after --since %s", f.until, f.since)
	}
	if err := validate.First(
		validate.Range[int]{Min: 1, Max: 10000}.Check("batch", f.batch),
		validate.Range[time.Duration]{Min: time.Second, Max: 10 * time.Minute}.Check("timeout", f.timeout),
		validate.Range[time.Duration]{Min: time.Second, Max: 24 * time.Hour, Special: []validate.Special[time.Duration]{{Value: 0, Means: "one attempt"}}}.Check("retry-for", f.retryFor),
	); err != nil {
		return otlp.Config{}, nil, err
	}
	if f.db == "" {
		return otlp.Config{}, nil, errors.New("--db: give the store file to read")
	}
	if x.StatePath == "" {
		x.StatePath = f.db + ".otlp-state"
	}
	cfg, err := otlp.ConfigFromEnv(getenv)
	if err != nil {
		return cfg, nil, err
	}
	if f.endpoint != "" {
		if cfg.Endpoint, err = otlp.EndpointURL(f.endpoint); err != nil {
			return cfg, nil, fmt.Errorf("--endpoint: %w", err)
		}
	}
	for _, h := range f.headers {
		k, v, err := otlp.ParseHeader(h, false)
		if err != nil {
			return cfg, nil, fmt.Errorf("--header: %w", err)
		}
		if cfg.Headers == nil {
			cfg.Headers = map[string]string{}
		}
		cfg.Headers[k] = v
	}
	if f.compression != "" {
		if cfg.Compression, err = otlp.ParseCompression(f.compression); err != nil {
			return cfg, nil, fmt.Errorf("--compression: %w", err)
		}
	}
	if f.caFile != "" {
		if _, err := os.Stat(f.caFile); err != nil {
			return cfg, nil, fmt.Errorf("--ca-file: %w", err)
		}
	}
	cfg.CAFile, cfg.Timeout, cfg.UserAgent = f.caFile, f.timeout, "obs-agent/"+versionString()
	// A zero --retry-for means one attempt: the smallest bound New accepts.
	cfg.MaxElapsed = max(f.retryFor, time.Nanosecond)
	x.ServiceName = f.serviceName
	if x.ServiceName == "" {
		x.ServiceName = getenv(otlp.EnvServiceName)
	}
	return cfg, x, nil
}

func runExportOTLP(ctx context.Context, w io.Writer, f *exportOTLPFlags, getenv func(string) string) error {
	cfg, x, err := f.options(getenv, time.Now())
	if err != nil {
		return err
	}
	exp, err := otlp.New(cfg)
	if err != nil {
		return err
	}
	defer exp.Close()
	s, err := store.Open(f.db, store.Options{ReadOnly: true})
	if errors.Is(err, store.ErrNoStore) {
		return fmt.Errorf("--db: no store at %s", f.db)
	}
	if err != nil {
		return err
	}
	defer s.Close()
	x.Store, x.Sender = s, exp
	x.Log = slog.Default().With("component", "export")
	rep, err := x.Run(ctx)
	fmt.Fprintf(w, "exported %d spans in %d requests to %s (receiver dropped %d); progress in %s\n",
		rep.Spans, rep.Requests, exp.Endpoint(), rep.Rejected, x.StatePath)
	if err != nil {
		return fmt.Errorf("%w; run the same command again to send the rest", err)
	}
	return nil
}
