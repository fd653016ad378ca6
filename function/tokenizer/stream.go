package tokenizer

// StreamDecoder decodes ids one at a time as a generator makes them, as
// Hugging Face's DecodeStream and vLLM's incremental detokenizer do: each
// step returns only text that is final, so a character whose bytes span
// several tokens is held back until its last byte comes. Pieces joined are
// the whole Decode of the ids, except where a file's ByteFallback decoder
// meets invalid bytes: it turns the whole run of byte tokens around them
// into U+FFFDs, while a stream has shown the run's valid characters
// already and never takes a piece back. A StreamDecoder is not safe for concurrent use; its zero value is
// not usable: make one with NewStreamDecoder.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	pending     []int64 // ids not yet shown
	started     bool    // the decoder has seen a token
	tail        []byte
}

// NewStreamDecoder starts a stream; skipSpecial leaves special tokens out,
// as DecodeWith does.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecial}
}

// Next adds one id and returns the text it makes final: "" while a
// character is incomplete (or the token decodes to nothing).
func (s *StreamDecoder) Next(id int64) string {
	s.pending = append(s.pending, id)
	if s.incomplete() {
		return ""
	}
	return s.emit()
}

// Flush returns what is held back, as the whole decode shows it (an
// incomplete character at the end as U+FFFD), and empties the stream; the
// stream may go on after it.
func (s *StreamDecoder) Flush() string {
	if len(s.pending) == 0 {
		return ""
	}
	return s.emit()
}

func (s *StreamDecoder) emit() string {
	text := s.t.decode(nil, s.pending, s.skipSpecial, s.started)
	// Rules for the start of the text (a leading space stripped) apply to
	// the first token the decoder sees, even if it decodes to nothing.
	for _, id := range s.pending {
		if id >= 0 && id < int64(len(s.t.pieces)) && !(s.skipSpecial && s.t.isAdded[id] == 2) {
			s.started = true
		}
	}
	s.pending = s.pending[:0]
	return string(text)
}

// incomplete says whether the pending tokens' bytes end inside a UTF-8
// character that more bytes could complete.
func (s *StreamDecoder) incomplete() bool {
	t := s.t
	if t.dec.wp != nil {
		return false
	}
	// The last few bytes are all that matter.
	s.tail = s.tail[:0]
	for i := len(s.pending) - 1; i >= 0 && len(s.tail) < 4; i-- {
		id := s.pending[i]
		if id < 0 || id >= int64(len(t.pieces)) || s.skipSpecial && t.isAdded[id] == 2 {
			continue
		}
		b := t.tokenBytes(id)
		if len(b) > 4 {
			b = b[len(b)-4:]
		}
		s.tail = append(append([]byte(nil), b...), s.tail...)
	}
	return incompleteTail(s.tail)
}

// incompleteTail says whether b ends with the start of a UTF-8 character
// that is valid so far but short of bytes.
func incompleteTail(b []byte) bool {
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return false
		}
		if c < 0xC0 {
			continue // a continuation byte: look further back
		}
		need := 0
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 2
		case c >= 0xE0 && c <= 0xEF:
			need = 3
		case c >= 0xF0 && c <= 0xF4:
			need = 4
		default:
			return false
		}
		return k < need && maximalSubpart(b[len(b)-k:]) == k
	}
	return false
}
