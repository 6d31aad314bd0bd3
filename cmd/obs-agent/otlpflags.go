package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/otlp"
)

// otlpFlags are the live OTLP sink's flags of attach and run.
type otlpFlags struct {
	endpoint string
	headers  []string
	caFile   string
	service  string
	compress string
	opts     *agent.OTLPOptions // set by check; nil: no OTLP sink
}

func (f *otlpFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.endpoint, "otlp-endpoint", "", "also send every recorded call as a span to this OTLP/HTTP endpoint while tracing, e.g. http://collector:4318 (default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT when set, else no OTLP); see docs/otlp.md")
	fl.StringArrayVar(&f.headers, "otlp-header", nil, "OTLP request header key=value (repeatable; wins over OTEL_EXPORTER_OTLP_HEADERS), e.g. authorization=Bearer xyz")
	fl.StringVar(&f.caFile, "otlp-ca-file", "", "PEM file of CA certificates trusted besides the system roots for an https OTLP endpoint")
	fl.StringVar(&f.service, "otlp-service-name", "", "service.name of the spans (default: OTEL_SERVICE_NAME, else the traced binary's name)")
	fl.StringVar(&f.compress, "otlp-compression", "", "OTLP request compression, gzip or none: none saves the agent about 0.3-0.4 µs of CPU a span on a flood, for about 3× the bytes: for a collector on this host or a fast network (default: OTEL_EXPORTER_OTLP_TRACES_COMPRESSION or OTEL_EXPORTER_OTLP_COMPRESSION, else gzip)")
}

// check combines the flags with the environment (flags win) and keeps the
// sink's options; without an endpoint from either, there is no OTLP sink
// and the other OTLP flags are refused as having no effect.
func (f *otlpFlags) check(getenv func(string) string) error {
	f.opts = nil
	headers := map[string]string{}
	for _, h := range f.headers {
		k, v, err := otlp.ParseHeader(h, false)
		if err != nil {
			return fmt.Errorf("--otlp-header: %w", err)
		}
		headers[k] = v
	}
	if f.caFile != "" {
		if _, err := os.Stat(f.caFile); err != nil {
			return fmt.Errorf("--otlp-ca-file: %w", err)
		}
	}
	compression := ""
	if f.compress != "" {
		var err error
		if compression, err = otlp.ParseCompression(f.compress); err != nil {
			return fmt.Errorf("--otlp-compression: %w", err)
		}
	}
	fromEnv := strings.TrimSpace(getenv(otlp.EnvTracesEndpoint)) != "" || strings.TrimSpace(getenv(otlp.EnvEndpoint)) != ""
	if f.endpoint == "" && !fromEnv {
		if len(f.headers) > 0 || f.caFile != "" || f.service != "" || f.compress != "" {
			return fmt.Errorf("--otlp-header, --otlp-ca-file, --otlp-service-name and --otlp-compression need an endpoint: give --otlp-endpoint URL (or set %s)", otlp.EnvEndpoint)
		}
		return nil
	}
	cfg, err := otlp.ConfigFromEnv(getenv)
	if err != nil && f.endpoint == "" {
		return err
	}
	if f.endpoint != "" {
		if cfg.Endpoint, err = otlp.EndpointURL(f.endpoint); err != nil {
			return fmt.Errorf("--otlp-endpoint: %w", err)
		}
	}
	if len(headers) > 0 && cfg.Headers == nil {
		cfg.Headers = map[string]string{}
	}
	for k, v := range headers {
		cfg.Headers[k] = v
	}
	if compression != "" {
		cfg.Compression = compression
	}
	cfg.CAFile, cfg.UserAgent = f.caFile, "obs-agent/"+versionString()
	// The exporter reads the CA file now: a bad one fails before any
	// probe is attached.
	exp, err := otlp.New(cfg)
	if err != nil {
		return fmt.Errorf("--otlp-endpoint: %w", err)
	}
	exp.Close()
	service := f.service
	if service == "" {
		service = getenv(otlp.EnvServiceName)
	}
	f.opts = &agent.OTLPOptions{Exporter: cfg, ServiceName: service, Version: versionString()}
	return nil
}
