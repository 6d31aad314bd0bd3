package otlp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// DefaultEndpoint is the OTLP/HTTP traces endpoint when none is given
// (the specification's default).
const DefaultEndpoint = "http://localhost:4318/v1/traces"

// tracesPath is appended to a base endpoint (OTEL_EXPORTER_OTLP_ENDPOINT).
const tracesPath = "/v1/traces"

// Config configures an Exporter.
type Config struct {
	// Endpoint is the full URL requests are POSTed to, e.g.
	// https://collector:4318/v1/traces.
	Endpoint string
	Headers  map[string]string
	// CAFile adds a PEM bundle to the system roots for an https endpoint.
	CAFile string
	// Timeout bounds one request (default 10 s).
	Timeout time.Duration
	// MaxElapsed bounds the retries of one batch, waits included
	// (default 2 min).
	MaxElapsed time.Duration
	// InitialBackoff and MaxBackoff bound the exponential back-off between
	// attempts (defaults 1 s and 30 s); a Retry-After longer than
	// MaxBackoff is still honoured, within MaxElapsed.
	InitialBackoff, MaxBackoff time.Duration
	// UserAgent is sent with every request.
	UserAgent string
	// QuietRetries logs each retry at debug level instead of warn: for a
	// caller that reports an outage itself, once (the live sink's queue).
	QuietRetries bool
	// Compression of the request bodies: CompressionGzip (the default,
	// "") or CompressionNone, which saves the live sink about 0.3-0.4 µs of
	// CPU a span on a flood (the encoder's own gzip, BenchmarkGzip; the
	// agent's whole increment, BenchmarkAgentCostSinks) for about three
	// times the bytes: for a collector on the same host or network, where
	// bytes are cheap and the agent's CPU is not.
	Compression string
}

// The values of Config.Compression, as the OTLP exporter specification
// names them (OTEL_EXPORTER_OTLP_COMPRESSION).
const (
	CompressionGzip = "gzip"
	CompressionNone = "none"
)

// ParseCompression checks a compression name (case-insensitive; "" is the
// default, gzip).
func ParseCompression(v string) (string, error) {
	switch c := strings.ToLower(strings.TrimSpace(v)); c {
	case "", CompressionGzip:
		return CompressionGzip, nil
	case CompressionNone:
		return CompressionNone, nil
	default:
		return "", fmt.Errorf("compression %q: want gzip or none", v)
	}
}

// Config defaults.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultMaxElapsed     = 2 * time.Minute
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 30 * time.Second
)

// Environment variables read by ConfigFromEnv.
const (
	EnvEndpoint          = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint    = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvHeaders           = "OTEL_EXPORTER_OTLP_HEADERS"
	EnvServiceName       = "OTEL_SERVICE_NAME"
	EnvCompression       = "OTEL_EXPORTER_OTLP_COMPRESSION"
	EnvTracesCompression = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
)

// ConfigFromEnv reads the standard variables through getenv:
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it is,
// OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/traces appended (as the
// specification says), OTEL_EXPORTER_OTLP_HEADERS is a comma-separated
// list of key=value with URL-encoded values. Unset: DefaultEndpoint.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{Endpoint: DefaultEndpoint}
	if v := strings.TrimSpace(getenv(EnvTracesEndpoint)); v != "" {
		c.Endpoint = v
	} else if v := strings.TrimSpace(getenv(EnvEndpoint)); v != "" {
		c.Endpoint = strings.TrimRight(v, "/") + tracesPath
	}
	if err := checkEndpoint(c.Endpoint); err != nil {
		return c, fmt.Errorf("%s: %w", envOf(getenv), err)
	}
	if v := getenv(EnvHeaders); strings.TrimSpace(v) != "" {
		c.Headers = map[string]string{}
		for _, kv := range strings.Split(v, ",") {
			if strings.TrimSpace(kv) == "" {
				continue
			}
			k, val, err := ParseHeader(kv, true)
			if err != nil {
				return c, fmt.Errorf("%s: %w", EnvHeaders, err)
			}
			c.Headers[k] = val
		}
	}
	for _, env := range []string{EnvTracesCompression, EnvCompression} {
		if v := strings.TrimSpace(getenv(env)); v != "" {
			comp, err := ParseCompression(v)
			if err != nil {
				return c, fmt.Errorf("%s: %w", env, err)
			}
			c.Compression = comp
			break
		}
	}
	return c, nil
}

func envOf(getenv func(string) string) string {
	if strings.TrimSpace(getenv(EnvTracesEndpoint)) != "" {
		return EnvTracesEndpoint
	}
	return EnvEndpoint
}

// EndpointURL turns a user's endpoint into the traces URL: a URL with no
// path (http://collector:4318) gets /v1/traces, one with a path is used
// as it is.
func EndpointURL(v string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil {
		return "", fmt.Errorf("%q is not a URL: %w", v, err)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = tracesPath
	}
	s := u.String()
	return s, checkEndpoint(s)
}

func checkEndpoint(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", v, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("endpoint %q: want an http:// or https:// URL", v)
	}
	if u.Host == "" {
		return fmt.Errorf("endpoint %q has no host", v)
	}
	return nil
}

// ParseHeader reads one key=value header; urlEncoded says the value is
// URL-encoded (the OTEL_EXPORTER_OTLP_HEADERS form).
func ParseHeader(kv string, urlEncoded bool) (string, string, error) {
	k, v, ok := strings.Cut(kv, "=")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return "", "", fmt.Errorf("header %q: want key=value", kv)
	}
	v = strings.TrimSpace(v)
	if urlEncoded {
		d, err := url.PathUnescape(v)
		if err != nil {
			return "", "", fmt.Errorf("header %q: bad URL encoding: %w", k, err)
		}
		v = d
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return "", "", fmt.Errorf("header %q: the key must be an HTTP token", k)
		}
	}
	if strings.ContainsAny(v, "\r\n\x00") {
		return "", "", fmt.Errorf("header %q: the value must not contain CR, LF or NUL", k)
	}
	return k, v, nil
}

// Exporter sends export requests to one OTLP/HTTP endpoint. Safe for
// concurrent use: a Retry-After the endpoint sends on one request holds
// back every request of the exporter, not only the one refused.
type Exporter struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger

	mu         sync.Mutex
	pauseUntil time.Time // no request starts before (Retry-After)
}

// New checks cfg and returns its exporter.
func New(cfg Config) (*Exporter, error) {
	if err := checkEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	cfg.Timeout = cmpOr(cfg.Timeout, DefaultTimeout)
	cfg.MaxElapsed = cmpOr(cfg.MaxElapsed, DefaultMaxElapsed)
	cfg.InitialBackoff = cmpOr(cfg.InitialBackoff, DefaultInitialBackoff)
	cfg.MaxBackoff = cmpOr(cfg.MaxBackoff, DefaultMaxBackoff)
	comp, err := ParseCompression(cfg.Compression)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	cfg.Compression = comp
	if cfg.Timeout < 0 || cfg.MaxElapsed < 0 || cfg.InitialBackoff < 0 || cfg.MaxBackoff < cfg.InitialBackoff {
		return nil, fmt.Errorf("otlp exporter: negative or inverted timeouts in %+v", cfg)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Compression is ours (request) and the response is tiny: no
	// transparent gzip negotiation.
	tr.DisableCompression = true
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("otlp exporter: read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("otlp exporter: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &Exporter{
		cfg:    cfg,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout},
		log:    slog.Default().With("component", "otlp"),
	}, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Endpoint is the URL requests go to.
func (e *Exporter) Endpoint() string { return e.cfg.Endpoint }

// Close releases idle connections.
func (e *Exporter) Close() { e.client.CloseIdleConnections() }

// PermanentError is a refusal that retrying cannot fix (a 4xx other than
// 429, a malformed response): the batch must not be sent again as is.
type PermanentError struct {
	Status int
	Msg    string
}

func (e *PermanentError) Error() string {
	if e.Status == 0 {
		return "otlp export failed for good: " + e.Msg
	}
	return fmt.Sprintf("otlp export refused: HTTP %d: %s", e.Status, e.Msg)
}

// Result is what the receiver said about one accepted request.
type Result struct {
	Attempts int
	// Rejected is the receiver's partial-success count of spans it
	// accepted the request for but dropped.
	Rejected int64
	Message  string
}

// Export sends req, retrying a transient failure (network error, 429,
// 502, 503, 504) with exponential back-off, honouring Retry-After (for
// every request of the exporter, see Exporter), until
// MaxElapsed has passed or ctx ends. It returns nil only when the receiver
// accepted the request.
func (e *Exporter) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (Result, error) {
	raw, err := proto.Marshal(req)
	if err != nil {
		return Result{}, fmt.Errorf("otlp export: encode: %w", err)
	}
	return e.ExportEncoded(ctx, raw)
}

// gzipWriters are reused: a new gzip.Writer allocates hundreds of KB of
// compressor state, more than a request's body.
//
// The compressor is klauspost/compress's gzip (pure Go, already linked in
// through prometheus/client_golang), at BestSpeed: on a live sink's batch
// of flood spans it took 0.55-0.6 of the CPU of the standard library's
// BestSpeed for the same size of body (BenchmarkGzip); the standard
// library's BestSpeed was itself about 3 times faster than its default
// level for 10% larger bodies. The agent's CPU is the scarcer resource:
// gzip was the largest part of what a span costs it.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// ExportEncoded is Export of a request already in the protobuf wire
// format (Encoder.Bytes).
func (e *Exporter) ExportEncoded(ctx context.Context, raw []byte) (Result, error) {
	body := raw
	if e.cfg.Compression == CompressionGzip {
		var zb bytes.Buffer
		zb.Grow(len(raw)/3 + 512) // spans compress to about 0.3 of their size
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(&zb)
		_, err := zw.Write(raw)
		if err == nil {
			err = zw.Close()
		}
		gzipWriters.Put(zw)
		if err != nil {
			return Result{}, fmt.Errorf("otlp export: gzip: %w", err)
		}
		body = zb.Bytes()
	}
	return e.ExportBody(ctx, body)
}

// Gzip reports whether the request bodies are gzipped (Config.Compression).
func (e *Exporter) Gzip() bool { return e.cfg.Compression == CompressionGzip }

// ExportBody is Export of a request body already encoded and, when Gzip
// says so, gzipped (Encoder.Gzipped).
func (e *Exporter) ExportBody(ctx context.Context, body []byte) (Result, error) {
	var res Result
	first := time.Now()
	deadline := first.Add(e.cfg.MaxElapsed)
	backoff := e.cfg.InitialBackoff
	gaveUp := func(err error) (Result, error) {
		if res.Attempts <= 1 {
			return res, err
		}
		return res, fmt.Errorf("otlp export: gave up after %d attempts over %v: %w", res.Attempts, time.Since(first).Round(time.Millisecond), err)
	}
	for {
		if err := e.waitPause(ctx, deadline); err != nil {
			return gaveUp(err)
		}
		res.Attempts++
		wait, err := e.post(ctx, body, &res)
		if err == nil {
			return res, nil
		}
		var perm *PermanentError
		if errors.As(err, &perm) || ctx.Err() != nil {
			return res, err
		}
		if wait == 0 {
			wait = backoff
			backoff = min(backoff*2, e.cfg.MaxBackoff)
		} else {
			e.pause(wait)
		}
		if time.Now().Add(wait).After(deadline) {
			return gaveUp(err)
		}
		lvl := slog.LevelWarn
		if e.cfg.QuietRetries {
			lvl = slog.LevelDebug
		}
		e.log.Log(ctx, lvl, "export failed; retrying", "attempt", res.Attempts, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("otlp export: %w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// pause holds back every request of the exporter for d: the endpoint
// said when to come back (Retry-After), for any request.
func (e *Exporter) pause(d time.Duration) {
	until := time.Now().Add(d)
	e.mu.Lock()
	if until.After(e.pauseUntil) {
		e.pauseUntil = until
	}
	e.mu.Unlock()
}

// waitPause waits out a pause the endpoint asked for on another request.
// A pause that lasts past deadline (the request's retry bound) is an
// error, a transient one: the endpoint is overloaded.
func (e *Exporter) waitPause(ctx context.Context, deadline time.Time) error {
	e.mu.Lock()
	until := e.pauseUntil
	e.mu.Unlock()
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	if until.After(deadline) {
		return fmt.Errorf("otlp export: the endpoint asked to wait until %s (Retry-After), past the retry bound", until.Format(time.RFC3339))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("otlp export: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// post makes one attempt. On a transient failure it returns the error and
// the wait the receiver asked for (Retry-After), 0 if none.
func (e *Exporter) post(ctx context.Context, body []byte, res *Result) (time.Duration, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, &PermanentError{Msg: err.Error()}
	}
	hr.Header.Set("Content-Type", "application/x-protobuf")
	if e.cfg.Compression == CompressionGzip {
		hr.Header.Set("Content-Encoding", "gzip")
	}
	if e.cfg.UserAgent != "" {
		hr.Header.Set("User-Agent", e.cfg.UserAgent)
	}
	for k, v := range e.cfg.Headers {
		hr.Header.Set(k, v)
	}
	resp, err := e.client.Do(hr)
	if err != nil {
		// A certificate the roots don't vouch for stays so: no retry.
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return 0, &PermanentError{Msg: err.Error()}
		}
		return 0, fmt.Errorf("otlp export: %w", err)
	}
	defer resp.Body.Close()
	// The response is a small status message; bound what we read.
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		var out coltracepb.ExportTraceServiceResponse
		if len(rb) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-protobuf") {
			if err := proto.Unmarshal(rb, &out); err == nil && out.PartialSuccess != nil {
				res.Rejected = out.PartialSuccess.RejectedSpans
				res.Message = out.PartialSuccess.ErrorMessage
			}
		}
		return 0, nil
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusBadGateway,
		resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		return retryAfter(resp.Header.Get("Retry-After"), time.Now()), fmt.Errorf("otlp export: HTTP %d: %s", resp.StatusCode, snippet(rb))
	}
	return 0, &PermanentError{Status: resp.StatusCode, Msg: snippet(rb)}
}

// retryAfter reads a Retry-After value: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// snippet is a printable prefix of a response body for an error message.
func snippet(b []byte) string {
	const n = 200
	if len(b) > n {
		b = b[:n]
	}
	s := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, string(b))
	if s = strings.TrimSpace(s); s == "" {
		return "(empty body)"
	}
	return s
}
