package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/state"
)

func TestMemoryETagAndTTL(t *testing.T) {
	now := time.Unix(0, 0)
	m := state.NewMemory(func() time.Time { return now })
	ctx := context.Background()
	const ttl = time.Minute

	s, etag, err := m.Get(ctx, "s1")
	if err != nil || etag != "" || s.Turn != 0 {
		t.Fatalf("Get of a new session = (%+v, %q, %v), want zero", s, etag, err)
	}
	if err := m.Save(ctx, "s1", state.Session{Version: 1, Turn: 1}, "", ttl); err != nil {
		t.Fatal(err)
	}
	// A second first-write loses.
	if err := m.Save(ctx, "s1", state.Session{Version: 1, Turn: 1}, "", ttl); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second first-write: got %v, want ErrConflict", err)
	}
	s, etag, _ = m.Get(ctx, "s1")
	if s.Turn != 1 || etag == "" {
		t.Fatalf("Get = (%+v, %q)", s, etag)
	}
	if err := m.Save(ctx, "s1", state.Session{Version: 1, Turn: 2}, etag, ttl); err != nil {
		t.Fatal(err)
	}
	if err := m.Save(ctx, "s1", state.Session{Version: 1, Turn: 2}, etag, ttl); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("save with a stale etag: got %v, want ErrConflict", err)
	}

	// Sliding expiry: each save renews the TTL.
	now = now.Add(ttl - time.Second)
	s, etag, _ = m.Get(ctx, "s1")
	if s.Turn != 2 {
		t.Fatalf("session gone before its TTL: %+v", s)
	}
	if err := m.Save(ctx, "s1", state.Session{Version: 1, Turn: 3}, etag, ttl); err != nil {
		t.Fatal(err)
	}
	now = now.Add(ttl - time.Second)
	if s, _, _ = m.Get(ctx, "s1"); s.Turn != 3 {
		t.Fatalf("renewed session gone: %+v", s)
	}
	now = now.Add(2 * time.Second)
	if s, etag, _ = m.Get(ctx, "s1"); s.Turn != 0 || etag != "" {
		t.Fatalf("session alive after its TTL: %+v", s)
	}
}

func TestMemorySweepsExpired(t *testing.T) {
	now := time.Unix(0, 0)
	m := state.NewMemory(func() time.Time { return now })
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if err := m.Save(ctx, id, state.Session{Turn: 1}, "", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Minute)
	if err := m.Save(ctx, "d", state.Session{Turn: 1}, "", time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := m.Len(); got != 1 {
		t.Errorf("%d sessions held after the others expired, want 1", got)
	}
}

// What a caller does with a session it saved or read never reaches the
// store: sessions are copied in and out.
func TestMemorySharesNoMemory(t *testing.T) {
	m := state.NewMemory(nil)
	ctx := context.Background()
	s := state.Session{Version: 1, Turn: 1, State: []float32{1},
		History: []state.Turn{{N: 1, Text: "hi", Output: []byte(`{"a":1}`)}}}
	if err := m.Save(ctx, "s", s, "", time.Minute); err != nil {
		t.Fatal(err)
	}
	s.State[0], s.History[0].N, s.History[0].Output[2] = 9, 9, 'X'
	got, _, _ := m.Get(ctx, "s")
	got.State[0], got.History[0].N, got.History[0].Output[2] = 8, 8, 'Y'
	again, _, _ := m.Get(ctx, "s")
	if again.State[0] != 1 || again.History[0].N != 1 || string(again.History[0].Output) != `{"a":1}` {
		t.Errorf("stored session changed by its callers: %+v %s", again, again.History[0].Output)
	}
}
