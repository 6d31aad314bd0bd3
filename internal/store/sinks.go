package store

import (
	"context"
	"fmt"
	"strings"
)

// migrationSessionSinks (schema 7 -> 8) adds session_sinks: per session,
// sink and function, what each of the agent's sinks (the store itself,
// the live OTLP sink) wrote and lost, as its ledger said when the session
// ended. The session row's calls_recorded and calls_lost are the store's
// alone; a sink that sent spans elsewhere has its losses only here.
var migrationSessionSinks = []string{
	`CREATE TABLE session_sinks (
		session INTEGER NOT NULL,
		sink TEXT NOT NULL,
		function TEXT NOT NULL,
		written INTEGER NOT NULL DEFAULT 0,
		dropped INTEGER NOT NULL DEFAULT 0,
		errors_lost INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (session, sink, function)
	) WITHOUT ROWID`,
}

// SinkAccount is one sink's account of one function's records in one
// session: Written records it wrote (stored, or sent as spans), Dropped
// those it lost (ok records shed, error records it could not keep), and
// ErrorsLost the error records among Dropped.
type SinkAccount struct {
	Session    uint64
	Sink       string
	Function   string
	Written    uint64
	Dropped    uint64
	ErrorsLost uint64
}

// SetSessionSinks replaces the sink accounts of session with accts (the
// Session field of each is ignored).
func (s *Store) SetSessionSinks(session uint64, accts []SinkAccount) error {
	return s.write("store sink accounts", func(tx *wtx) error {
		if _, err := tx.exec(`DELETE FROM session_sinks WHERE session = ?`, int64(session)); err != nil {
			return err
		}
		for _, a := range accts {
			if _, err := tx.exec(`INSERT INTO session_sinks (session, sink, function, written, dropped, errors_lost) VALUES (?, ?, ?, ?, ?, ?)`,
				int64(session), a.Sink, a.Function, int64(a.Written), int64(a.Dropped), int64(a.ErrorsLost)); err != nil {
				return fmt.Errorf("sink %s, %s: %w", a.Sink, a.Function, err)
			}
		}
		return nil
	})
}

// SessionSinks returns the sink accounts of the given sessions (all when
// none are given), by session, sink and function. A store older than
// schema 9 has none.
func (s *Store) SessionSinks(ctx context.Context, sessions ...uint64) ([]SinkAccount, error) {
	var out []SinkAccount
	err := s.read(ctx, "query sink accounts", func(r *rtx) error {
		if ok, err := r.hasTable("session_sinks"); !ok || err != nil {
			return err
		}
		q := `SELECT session, sink, function, written, dropped, errors_lost FROM session_sinks`
		args := make([]any, len(sessions))
		if len(sessions) > 0 {
			for i, id := range sessions {
				args[i] = int64(id)
			}
			q += ` WHERE session IN (?` + strings.Repeat(`, ?`, len(sessions)-1) + `)`
		}
		rows, err := r.tx.QueryContext(r.ctx, q+` ORDER BY session, sink, function`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a SinkAccount
			var sess, w, d, e int64
			if err := rows.Scan(&sess, &a.Sink, &a.Function, &w, &d, &e); err != nil {
				return fmt.Errorf("read sink account: %w", err)
			}
			a.Session, a.Written, a.Dropped, a.ErrorsLost = uint64(sess), uint64(w), uint64(d), uint64(e)
			out = append(out, a)
		}
		return rows.Err()
	})
	return out, err
}

// hasTable reports whether the store has table name: a reader opens an
// older store as it is, without the tables later schemas add.
func (r *rtx) hasTable(name string) (bool, error) {
	var n int
	err := r.tx.QueryRowContext(r.ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n)
	return n > 0, err
}
