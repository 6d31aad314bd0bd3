package store

import "github.com/obs-agent/obs-agent/internal/glob"

// MatchGlob reports whether name matches pattern with the same rules as
// function selection (package internal/glob): '*' matches any run of
// characters, '?' one character, everything else is literal, including the
// '[' and ']' of type arguments.
func MatchGlob(pattern, name string) bool { return glob.Match(pattern, name) }
