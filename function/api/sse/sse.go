// Package sse writes server-sent events for streamed replies, for every
// route that streams (/turn's events, OpenAI's chunks): the headers a
// stream needs through proxies, and a queue that takes text pieces from
// the decode engine's loop, which must never wait on a client, and writes
// them in order, none lost.
package sse

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"
)

// Stream is one response's event stream. Begin is implicit in the first
// write; a Stream is used from one goroutine at a time (its Queue writes
// from its own, between Push and Close).
type Stream struct {
	w       *echo.Response
	started bool
}

// New returns the stream of c's response.
func New(c echo.Context) *Stream { return &Stream{w: c.Response()} }

// Started reports whether the response has begun (its status is sent: an
// error can only be an event now).
func (s *Stream) Started() bool { return s.started }

// Begin sends the stream's headers and status, once.
func (s *Stream) Begin() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Proxies that buffer responses (nginx) would hold the stream back.
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

// Event writes one event: a name (OpenAI's chunks have none) and its data
// line, flushed.
func (s *Stream) Event(name string, data []byte) {
	s.Begin()
	if name != "" {
		fmt.Fprintf(s.w, "event: %s\n", name)
	}
	fmt.Fprintf(s.w, "data: %s\n\n", data)
	s.w.Flush()
}

// Queue hands pieces from a producer that must not block (the decode
// engine's loop) to a writer goroutine, in order, none lost.
type Queue struct {
	mu      sync.Mutex // guards pieces
	pieces  []string
	more    chan struct{}
	done    chan struct{}
	written chan struct{}
}

// NewQueue starts a writer that calls write with each piece pushed.
func NewQueue(write func(string)) *Queue {
	q := &Queue{more: make(chan struct{}, 1), done: make(chan struct{}), written: make(chan struct{})}
	go func() {
		defer close(q.written)
		for {
			select {
			case <-q.more:
			case <-q.done:
			}
			q.mu.Lock()
			pieces := q.pieces
			q.pieces = nil
			q.mu.Unlock()
			for _, p := range pieces {
				write(p)
			}
			select {
			case <-q.done:
				q.mu.Lock()
				left := len(q.pieces)
				q.mu.Unlock()
				if left == 0 {
					return
				}
			default:
			}
		}
	}()
	return q
}

// Push queues a piece; it never blocks.
func (q *Queue) Push(p string) {
	q.mu.Lock()
	q.pieces = append(q.pieces, p)
	q.mu.Unlock()
	select {
	case q.more <- struct{}{}:
	default:
	}
}

// Close waits until every piece pushed is written; call it once, after
// the last Push.
func (q *Queue) Close() {
	close(q.done)
	<-q.written
}
