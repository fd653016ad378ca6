package state_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sous-ai/sous/function/state"
)

// A turn reads the session with its ETag and saves the next version on
// that ETag; a writer holding a stale ETag loses and must re-read.
func ExampleMemory() {
	store := state.NewMemory(nil)
	ctx := context.Background()

	s, etag, _ := store.Get(ctx, "s1") // a new session: zero value, no ETag
	s.Turn++
	fmt.Println(store.Save(ctx, "s1", s, etag, 30*time.Minute))

	s.Turn++
	err := store.Save(ctx, "s1", s, etag, 30*time.Minute) // etag is stale now
	fmt.Println(errors.Is(err, state.ErrConflict))

	s, _, _ = store.Get(ctx, "s1")
	fmt.Println(s.Turn)
	// Output:
	// <nil>
	// true
	// 1
}
