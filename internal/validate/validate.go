// Package validate owns the checks on values a user hands obs-agent on the
// command line: the allowed range of every numeric flag, the representable
// range of times, and how user text is quoted back in an error message
// (clipped, so that a 10,000-character pattern does not flood the terminal).
//
// Every command checks all of its flags with these helpers before it does
// anything else, so a nonsense value fails fast, names the flag and the
// allowed range, and nothing is started, attached or created. The ranges
// of the tracing settings (trace.go) are shared by the flags of attach and
// run and the keys of the daemon's config file (internal/config), which
// these helpers name as written when the name has a dot in it (Name).
package validate

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Error is a flag value outside the flag's allowed range.
type Error struct {
	Flag  string // the flag's long name, without dashes
	Value string // the value as given, clipped
	Want  string // the allowed values, in words
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s is out of range: want %s", Name(e.Flag), e.Value, e.Want)
}

// Name is how a message names a setting: "--flag" for a command-line flag,
// and the key itself for a key of the daemon's config file, which always
// has a dot in it ("limits.memory_mib", "targets[0].sample"). The same
// checks then serve both and each error names what the user wrote.
func Name(flag string) string {
	if strings.Contains(flag, ".") {
		return flag
	}
	return "--" + flag
}

// Number is the kinds of flag values Range checks.
type Number interface {
	~int | ~int64 | ~uint32 | ~float64
}

// Special is a value outside Min..Max that a flag accepts because it means
// something, such as 0 for "no limit".
type Special[T Number] struct {
	Value T
	Means string
}

// Range is the values a flag accepts: Min to Max inclusive, plus the Special
// values. Max 0 means no upper bound (no flag here has 0 as its maximum).
type Range[T Number] struct {
	Min, Max T
	Special  []Special[T]
}

// Check returns an *Error when v is outside r.
func (r Range[T]) Check(flag string, v T) error {
	for _, s := range r.Special {
		if v == s.Value {
			return nil
		}
	}
	f := float64(v)
	if !math.IsNaN(f) && v >= r.Min && (r.Max == 0 || v <= r.Max) {
		return nil
	}
	return &Error{Flag: flag, Value: format(v), Want: r.String()}
}

// String describes the range in words, e.g. "0 (no limit), or from 1ms to 1h".
func (r Range[T]) String() string {
	var b strings.Builder
	for i, s := range r.Special {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", format(s.Value), s.Means)
	}
	if len(r.Special) > 0 {
		b.WriteString(", or ")
	}
	if r.Max == 0 {
		fmt.Fprintf(&b, "at least %s", format(r.Min))
	} else {
		fmt.Fprintf(&b, "from %s to %s", format(r.Min), format(r.Max))
	}
	return b.String()
}

// format prints durations as durations ("1m0s" reads worse than "1m") and
// numbers as numbers.
func format[T Number](v T) string {
	switch x := any(v).(type) {
	case time.Duration:
		if x == 0 {
			return "0"
		}
		s := x.String() // 1m0s, 1h0m0s: drop the zero tails
		if strings.HasSuffix(s, "m0s") {
			s = s[:len(s)-2]
		}
		if strings.HasSuffix(s, "h0m") {
			s = s[:len(s)-2]
		}
		return s
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

// The times a store can hold: records keep times as int64 nanoseconds since
// 1970, so a time outside this span would wrap around and silently select
// every row or none.
var (
	MinTime = time.Unix(0, math.MinInt64).UTC()
	MaxTime = time.Unix(0, math.MaxInt64).UTC()
)

// Time checks that t fits in int64 nanoseconds; the zero time means
// "unbounded" and is accepted.
func Time(flag, given string, t time.Time) error {
	if t.IsZero() || (!t.Before(MinTime) && !t.After(MaxTime)) {
		return nil
	}
	return &Error{Flag: flag, Value: Clip(given), Want: fmt.Sprintf("a time from %s to %s (what the store's 64-bit nanosecond times can hold)",
		MinTime.Truncate(time.Second).Add(time.Second).Format(time.RFC3339), MaxTime.Truncate(time.Second).Format(time.RFC3339))}
}

// First returns the first non-nil error: the checks of a command, in the
// order of its flags.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// NotDir checks that path, when given, does not name a directory, so that
// a file meant to be written there fails now rather than after the work.
func NotDir(flag, path string) error {
	if fi, err := os.Stat(path); path != "" && err == nil && fi.IsDir() {
		return fmt.Errorf("%s %s is a directory: give the path of a file in it", Name(flag), Clip(path))
	}
	return nil
}

// WritableDir checks that path, when given, is a directory that can be
// written, or can be created: its nearest existing ancestor is a writable
// directory. A read-only file system is found at start, not when the first
// write fails hours later.
func WritableDir(flag, path string) error {
	if path == "" {
		return nil
	}
	p := filepath.Clean(path)
	for {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("%s %s: %s is not a directory", Name(flag), Clip(path), Clip(p))
		case err == nil:
			if err := unix.Access(p, unix.W_OK); err != nil {
				return fmt.Errorf("%s %s: cannot write to %s: %w", Name(flag), Clip(path), Clip(p), err)
			}
			return nil
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%s %s: %w", Name(flag), Clip(path), err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}

// maxEcho is how many bytes of user text an error message repeats.
const maxEcho = 80

// maxLine is how long a whole message that repeats user text, such as a
// flag parser's, may grow.
const maxLine = 400

// Clip shortens user text for an error message: past maxEcho bytes it keeps
// the start, cut at a character boundary, and says how long the whole was.
func Clip(s string) string { return clip(s, maxEcho) }

// ClipLine is Clip for a whole message that quotes user text somewhere.
func ClipLine(s string) string { return clip(s, maxLine) }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}

// Quote is strconv.Quote of the clipped text, for %q-style messages.
func Quote(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	c := Clip(s)
	i := strings.LastIndex(c, "… (")
	return strconv.Quote(c[:i]) + c[i:]
}

// portRange is the TCP ports a server may listen on.
var portRange = Range[int]{Min: 1, Max: 65535}

// ListenAddr checks a server address flag and returns the address to
// listen on. A port alone (9464 or :9464) means loopback only: an endpoint
// of a root agent is reachable from other hosts only when an address says
// so (0.0.0.0:9464, [::]:9464, 192.0.2.7:9464). The host must be an IP
// address or localhost, so no name is resolved.
func ListenAddr(flag, v string) (string, error) {
	bad := fmt.Errorf("%s %s: want PORT (served on 127.0.0.1 only) or IP:PORT, e.g. 9464, 127.0.0.1:9464 or 0.0.0.0:9464 for every interface", Name(flag), Quote(v))
	host, port := "", v
	if strings.Contains(v, ":") {
		var err error
		if host, port, err = net.SplitHostPort(v); err != nil {
			return "", bad
		}
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", bad
	}
	if err := portRange.Check(flag, p); err != nil {
		return "", err
	}
	switch {
	case host == "" || host == "localhost":
		host = "127.0.0.1"
	case net.ParseIP(host) == nil:
		return "", bad
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}
