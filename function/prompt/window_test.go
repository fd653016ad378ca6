package prompt

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// words encodes a rendered prompt one id per word: a prompt's length is its
// word count.
func words(text string) []int64 {
	ids := make([]int64, len(strings.Fields(text)))
	for i := range ids {
		ids[i] = int64(i)
	}
	return ids
}

func history(n int) []Exchange {
	var h []Exchange
	for i := 1; i <= n; i++ {
		h = append(h, Exchange{N: i, User: fmt.Sprintf("q%d", i), Assistant: fmt.Sprintf("a%d", i)})
	}
	return h
}

func TestBuildWindowsTheTranscriptInBlocks(t *testing.T) {
	var rendered string
	b := Builder{Positions: 40, Encode: func(s string) []int64 { rendered = s; return words(s) }}
	msg := []Message{{Role: "developer", Content: "now"}}
	for _, tc := range []struct {
		turns     int
		firstKept string // the oldest exchange the prompt keeps
	}{
		// Each exchange is 4 words ("user: qN assistant: aN"), the
		// message 2, the generation prompt 1: 40 - 10 max_tokens leaves
		// room for 6 exchanges.
		{turns: 3, firstKept: "q1"},
		{turns: 6, firstKept: "q1"},
		// Over: the oldest exchanges go in blocks of DropBlock turns, so
		// the prompt keeps its start from turn 7 to turn 10.
		{turns: 7, firstKept: "q5"},
		{turns: 10, firstKept: "q5"},
		{turns: 11, firstKept: "q9"},
	} {
		ids, err := b.Build(history(tc.turns), msg, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 30 {
			t.Errorf("%d turns: %d ids, over the room of 30", tc.turns, len(ids))
		}
		if !strings.HasPrefix(rendered, "user: "+tc.firstKept+" ") {
			t.Errorf("%d turns: prompt starts %q, want exchange %s first", tc.turns, rendered[:min(20, len(rendered))], tc.firstKept)
		}
		if !strings.HasSuffix(rendered, "system: now assistant:") {
			t.Errorf("%d turns: the request's message (developer as system) must come last: %q", tc.turns, rendered)
		}
	}
	// A message too long on its own is refused, never cut, with or
	// without stored exchanges before it.
	long := []Message{{Role: "user", Content: strings.Repeat("w ", 100)}}
	for _, h := range [][]Exchange{nil, history(9)} {
		if ids, err := b.Build(h, long, 10); !errors.Is(err, ErrContextLength) {
			t.Errorf("long message after %d exchanges: %d ids, %v; want ErrContextLength", len(h), len(ids), err)
		}
	}
}
