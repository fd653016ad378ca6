package state

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Memory is the embedded store, the default when no Dapr sidecar is
// configured: sessions live in this process only. Sessions are copied in
// and out, so that no caller shares memory with the store; they are not
// encoded, which cost more than half of a turn's CPU. The zero value is not
// usable; use NewMemory.
type Memory struct {
	now func() time.Time

	mu        sync.Mutex // guards entries, version, lastSweep
	entries   map[string]memEntry
	version   uint64
	lastSweep time.Time
}

type memEntry struct {
	session Session
	etag    string
	expires time.Time
}

// NewMemory returns an empty store; now is its clock (nil: time.Now).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, entries: make(map[string]memEntry)}
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, id string) (Session, string, error) {
	if err := ctx.Err(); err != nil {
		return Session{}, "", err
	}
	m.mu.Lock()
	e, ok := m.entries[id]
	if ok && !m.now().Before(e.expires) {
		delete(m.entries, id)
		ok = false
	}
	m.mu.Unlock()
	if !ok {
		return Session{}, "", nil
	}
	return e.session.clone(), e.etag, nil
}

// Save implements Store.
func (m *Memory) Save(ctx context.Context, id string, s Session, etag string, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s = s.clone()
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.entries[id]
	if ok && !now.Before(cur.expires) {
		ok = false
	}
	switch {
	case !ok && etag != "", ok && cur.etag != etag:
		return fmt.Errorf("state: save %q: %w", id, ErrConflict)
	}
	m.version++
	m.entries[id] = memEntry{session: s, etag: strconv.FormatUint(m.version, 10), expires: now.Add(ttl)}
	// Expired sessions nobody reads again are swept now and then, so that
	// memory stays bounded by the live sessions.
	if now.Sub(m.lastSweep) > ttl/2 {
		m.lastSweep = now
		for k, e := range m.entries {
			if !now.Before(e.expires) {
				delete(m.entries, k)
			}
		}
	}
	return nil
}

// clone returns a deep copy of s.
func (s Session) clone() Session {
	s.State = slices.Clone(s.State)
	s.History = slices.Clone(s.History)
	for i := range s.History {
		s.History[i].Output = slices.Clone(s.History[i].Output)
	}
	return s
}

// Len returns the number of sessions held, expired or not yet swept.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// GetBulk implements Store.
func (m *Memory) GetBulk(ctx context.Context, ids []string) ([]Entry, error) {
	out := make([]Entry, len(ids))
	for i, id := range ids {
		out[i].Session, out[i].ETag, out[i].Err = m.Get(ctx, id)
	}
	return out, ctx.Err()
}

// SaveBulk implements Store.
func (m *Memory) SaveBulk(ctx context.Context, items []SaveItem, ttl time.Duration) []error {
	errs := make([]error, len(items))
	for i, it := range items {
		errs[i] = m.Save(ctx, it.ID, it.Session, it.ETag, ttl)
	}
	return errs
}
