// Package state keeps conversations: the Store interface the turn pipeline
// reads and writes a session through, and its embedded in-memory
// implementation. Writes are conditional on the ETag read (first write
// wins), and every save renews the session's time to live.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"
)

// Errors a caller acts on.
var (
	// ErrConflict: the session changed since it was read; read it again and
	// redo the turn.
	ErrConflict = errors.New("state: etag mismatch")
	// ErrUnavailable: the store cannot be reached now; the turn fails with
	// 503 and may be retried.
	ErrUnavailable = errors.New("state: store unavailable")
)

// Session is the stored value of one conversation: a versioned JSON
// document.
type Session struct {
	// Version is the document's schema version, 1.
	Version int `json:"v"`
	// Turn counts the session's turns: the last one taken.
	Turn int `json:"turn"`
	// State is the model's recurrent state after the last turn.
	State []float32 `json:"state,omitempty"`
	// History holds the last turns, oldest first.
	History []Turn `json:"history,omitempty"`
}

// Turn is one entry of a session's transcript.
type Turn struct {
	N int `json:"n"`
	// Event identifies the request (CloudEvent source and id, or the /turn
	// id) so that a redelivery is answered from here, not run twice.
	Event string `json:"event,omitempty"`
	Text  string `json:"text,omitempty"`
	// Messages are the turn's messages when they are more than the
	// user's text (a tool loop's results), as a JSON list of chat
	// messages.
	Messages  json.RawMessage `json:"messages,omitempty"`
	Output    json.RawMessage `json:"output"`
	BatchSize int             `json:"batch_size"`
	At        time.Time       `json:"at"`
}

// Store reads and writes sessions. Implementations are safe for concurrent
// use.
type Store interface {
	// Get returns the session and its ETag; a session never saved (or
	// expired) is the zero Session with ETag "".
	Get(ctx context.Context, id string) (Session, string, error)
	// Save writes s if the stored ETag is still etag ("" meaning: only if
	// the session does not exist), else ErrConflict. ttl renews the
	// session's expiry.
	Save(ctx context.Context, id string, s Session, etag string, ttl time.Duration) error
	// GetBulk reads many sessions in one call. The whole call failing is
	// its error; one session failing is its Entry's Err.
	GetBulk(ctx context.Context, ids []string) ([]Entry, error)
	// SaveBulk writes many sessions, each conditional on its ETag as Save
	// is, and returns one error per item (nil, ErrConflict, or the store's
	// failure). An item reported as a conflict may nevertheless have been
	// written (a remote store cannot always tell): redoing it must be
	// idempotent.
	SaveBulk(ctx context.Context, items []SaveItem, ttl time.Duration) []error
}

// Entry is one session read by GetBulk.
type Entry struct {
	Session Session
	ETag    string
	Err     error
}

// SaveItem is one session to write with SaveBulk.
type SaveItem struct {
	ID      string
	Session Session
	ETag    string
}

// PerCall wraps a store so that GetBulk and SaveBulk make one concurrent
// Get or Save per session instead of one call for all: the per-turn cost
// model, kept to measure what batching state calls buys
// (SOUS_STATE_BATCH=false).
type PerCall struct{ Store }

// GetBulk implements Store with one Get per session, concurrently.
func (p PerCall) GetBulk(ctx context.Context, ids []string) ([]Entry, error) {
	out := make([]Entry, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Session, out[i].ETag, out[i].Err = p.Get(ctx, id)
		}()
	}
	wg.Wait()
	return out, nil
}

// SaveBulk implements Store with one Save per session, concurrently.
func (p PerCall) SaveBulk(ctx context.Context, items []SaveItem, ttl time.Duration) []error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Save(ctx, it.ID, it.Session, it.ETag, ttl)
		}()
	}
	wg.Wait()
	return errs
}
