// Package ui serves obs-agent's web UI: the pages (embedded with go:embed,
// so nothing is fetched from the internet) and the JSON API under /api/
// they read. It owns access control (a random token per start, a cookie
// after the first visit, loopback unless the caller allows otherwise) and
// the security headers. It holds no query logic and no SQL: every answer
// comes from internal/query and is written in the JSON of internal/render,
// so the API has the keys of `obs-agent query --format json`.
package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/validate"
)

//go:embed assets
var assets embed.FS

// DefaultListen is where the UI listens unless told otherwise.
const DefaultListen = "127.0.0.1:7070"

// cookieName carries the token after the first visit.
const cookieName = "obs_agent_token"

// Options configure a Server.
type Options struct {
	DB     string // store file, opened read-only on first use
	Token  string // "" = generate one
	Logger *slog.Logger
}

// Server is the UI's HTTP handler over one store.
type Server struct {
	db     string
	token  string
	log    *slog.Logger
	static http.Handler

	mu sync.Mutex
	q  *query.Layer

	hub         hub           // live updates (live.go)
	streamsDone chan struct{} // closed when the server shuts down: ends the event streams
	endStreams  sync.Once
}

// New returns a server over the store at o.DB. The store is opened on the
// first request that needs it, so the UI can start before an agent has
// created the store.
func New(o Options) (*Server, error) {
	tok := o.Token
	if tok == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("ui: token: %w", err)
		}
		tok = hex.EncodeToString(b)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	s := &Server{db: o.DB, token: tok, log: log.With("component", "ui"), static: http.FileServerFS(sub), streamsDone: make(chan struct{})}
	s.hub.s = s
	return s, nil
}

// Token is the access token every request must carry.
func (s *Server) Token() string { return s.token }

// Close closes the store if it was opened.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.q == nil {
		return nil
	}
	err := s.q.Close()
	s.q = nil
	return err
}

// layer opens the store read-only once it exists.
func (s *Server) layer() (*query.Layer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.q != nil {
		return s.q, nil
	}
	q, err := query.Open(s.db)
	if err != nil {
		return nil, err
	}
	s.q = q
	return q, nil
}

// views are the page paths; each serves the one HTML page, whose script
// draws the view the path names.
var views = map[string]bool{"/": true, "/functions": true, "/function": true, "/errors": true, "/call": true, "/resources": true, "/store": true}

// Handler is the whole UI: pages, assets and API, behind the token.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if views[r.URL.Path] {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/"
			s.static.ServeHTTP(w, r2)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/static/") {
			s.static.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	})
	return s.secure(mux)
}

// secure sets the security headers, allows only GET and HEAD, and checks
// the token: from ?token= (then set as a cookie and dropped from the URL),
// the cookie, or an Authorization: Bearer header.
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "", "the UI only reads: use GET")
			return
		}
		if tok := r.URL.Query().Get("token"); tok != "" {
			if !s.tokenOK(tok) {
				writeError(w, http.StatusUnauthorized, "token", "wrong token: open the URL obs-agent ui printed")
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			if !strings.HasPrefix(r.URL.Path, "/api/") {
				// Drop the token from the address bar and history.
				u := *r.URL
				qv := u.Query()
				qv.Del("token")
				u.RawQuery = qv.Encode()
				http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(cookieName); err == nil && s.tokenOK(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && s.tokenOK(b) {
			next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusUnauthorized, "token", "missing token: open the URL obs-agent ui printed (it ends in ?token=...)")
	})
}

func (s *Server) tokenOK(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(s.token)) == 1
}

// CheckListen validates a --listen address: host:port with an IP literal
// or localhost and a port in 0..65535 (0 picks a free one). A host that is
// not loopback needs allowRemote. flag names the flag in errors.
func CheckListen(flag, addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want HOST:PORT such as %s", validate.Name(flag), addr, DefaultListen)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s %q: port must be 0..65535 (0 picks a free port)", validate.Name(flag), addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("%s %q: host must be an IP address or localhost", validate.Name(flag), addr)
	}
	if !ip.IsLoopback() && !allowRemote {
		how := "pass --allow-remote to serve it anyway"
		switch {
		case strings.Contains(flag, "."): // a key of the daemon's config
			how = "set ui.allow_remote: true to serve it anyway"
		case flag != "listen":
			how = "serve it with `obs-agent ui --allow-remote` instead"
		}
		return fmt.Errorf("%s %q is not a loopback address: anyone who can reach it and learns the token sees the traced calls; %s", validate.Name(flag), addr, how)
	}
	return nil
}

// Listen opens the UI's listener on addr (checked with CheckListen).
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ui: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// URL is the address to open: the listener's with the token.
func (s *Server) URL(ln net.Listener) string {
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/?token=" + url.QueryEscape(s.token)
}

// Serve serves the UI on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, s *Server, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	// Shutdown waits for open requests, and an event stream never ends by
	// itself.
	srv.RegisterOnShutdown(func() { s.endStreams.Do(func() { close(s.streamsDone) }) })
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if e := <-done; !errors.Is(e, http.ErrServerClosed) && err == nil {
			err = e
		}
		return err
	}
}
