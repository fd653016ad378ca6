package grammar

import (
	"fmt"
	"math"
	"math/bits"
	"sync"
)

// Constraint is a Grammar bound to a Vocab: it computes and caches the mask
// of each automaton state. Build one per (schema, vocabulary) and share it
// between sequences; it is safe for concurrent use.
type Constraint struct {
	g   *Grammar
	v   *Vocab
	cls []uint8 // per trie node: its byte's class in g

	mu       sync.Mutex // guards masks
	masks    map[int32][]uint64
	maxMasks int
}

// NewConstraint binds g to v, caching the masks of up to cacheMasks states
// (0: 1024; each mask is v.MaskWords()*8 bytes, 19 KB for Qwen3); when
// full, a random cached state makes room.
func NewConstraint(g *Grammar, v *Vocab, cacheMasks int) *Constraint {
	if cacheMasks <= 0 {
		cacheMasks = 1024
	}
	cls := make([]uint8, len(v.nodes))
	for i := range v.nodes {
		cls[i] = g.class[v.nodes[i].b]
	}
	return &Constraint{g: g, v: v, cls: cls, masks: map[int32][]uint64{}, maxMasks: cacheMasks}
}

// mask is state s's mask; the slice is shared and must not be written.
func (c *Constraint) mask(s int32) []uint64 {
	c.mu.Lock()
	m, ok := c.masks[s]
	c.mu.Unlock()
	if ok {
		return m
	}
	m = make([]uint64, c.v.words)
	c.compute(s, m)
	c.mu.Lock()
	if old, ok := c.masks[s]; ok {
		m = old
	} else {
		if len(c.masks) >= c.maxMasks {
			// Full: drop one entry at random (map order), so that the states
			// in use now get cached. A dropped mask is never rewritten: a
			// caller still holding it (Mask) keeps a valid slice.
			for k := range c.masks {
				delete(c.masks, k)
				break
			}
		}
		c.masks[s] = m
	}
	c.mu.Unlock()
	return m
}

// compute walks the vocabulary trie from state s, skipping each subtree
// whose prefix the automaton rejects.
func (c *Constraint) compute(s int32, dst []uint64) {
	g, v := c.g, c.v
	clear(dst)
	if s == 0 {
		return
	}
	if g.accepts(s) {
		for _, e := range v.eos {
			dst[e>>6] |= 1 << (uint(e) & 63)
		}
	}
	if g.isFinal(s) {
		return
	}
	states := make([]int32, v.depth+1)
	states[0] = s
	nodes, trans, cls, ph := v.nodes, g.trans, c.cls[:len(v.nodes)], v.ph[:len(v.nodes)]
	run, text, magic, skips := g.run, g.text, g.magic, g.skips
	th, tu := v.th[:len(nodes)], v.tu[:len(nodes)]
	for i := 0; i < len(nodes); {
		nd := &nodes[i]
		ps := states[nd.depth-1]
		// A subtree of text no longer than the text the parent state
		// accepts whatever it is: every token in it is allowed.
		if h1, h2 := ph[i], th[i]; h1|h2 != 0 {
			if id := uint64(ps) * magic >> 32; skips[id] &&
				(h1 != 0 && h1 <= run[id] || h2 != 0 && h2 <= text[id*8+uint64(tu[i])]) {
				for _, id := range v.pre[v.preLo[i]:v.preLo[nd.skip]] {
					dst[id>>6] |= 1 << (uint(id) & 63)
				}
				i = int(nd.skip)
				continue
			}
		}
		t := trans[ps+int32(cls[i])]
		if t == 0 {
			i = int(nd.skip)
			continue
		}
		states[nd.depth] = t
		if id := nd.tok; id >= 0 {
			dst[id>>6] |= 1 << (uint(id) & 63)
			if nd.dup {
				for _, id := range v.dups[i] {
					dst[id>>6] |= 1 << (uint(id) & 63)
				}
			}
		}
		i++
	}
}

// NewMatcher starts a sequence at the grammar's start.
func (c *Constraint) NewMatcher() *Matcher { return &Matcher{c: c, state: c.g.start} }

// Matcher follows one sequence through the grammar. It is not safe for
// concurrent use; clone it (Clone) to fork a sequence.
//
// Per decode step the engine either masks first (FillMask, sample among
// the set bits) or samples first and checks the one token with Allowed,
// masking only when it is rejected; then Accept(id). When Done reports
// true the sequence ends (finish "stop") without sampling again.
type Matcher struct {
	c     *Constraint
	state int32
	ended bool // an end-of-sequence id was accepted
}

// Clone is an independent copy of m at the same point.
func (m *Matcher) Clone() *Matcher { c := *m; return &c }

// Reset goes back to the start.
func (m *Matcher) Reset() { m.state, m.ended = m.c.g.start, false }

// FillMask sets dst (at least MaskWords long) to the ids allowed next: the
// tokens whose bytes keep the text completable, and the end-of-sequence ids
// where the text so far is complete. After the end nothing is allowed.
// Words of dst past MaskWords (ids a model has beyond the vocabulary) are
// cleared.
func (m *Matcher) FillMask(dst []uint64) {
	if m.ended {
		clear(dst)
		return
	}
	n := copy(dst, m.c.mask(m.state))
	clear(dst[n:])
}

// Mask is FillMask without the copy: the slice may be shared with other
// matchers and must not be written.
func (m *Matcher) Mask() []uint64 {
	if m.ended {
		return make([]uint64, m.c.v.words)
	}
	return m.c.mask(m.state)
}

// Allowed reports whether id may come next, checking only its bytes.
func (m *Matcher) Allowed(id int) bool {
	if m.ended || id < 0 || id >= len(m.c.v.tokens) {
		return false
	}
	if m.c.v.isEOS[id] {
		return m.c.g.accepts(m.state)
	}
	t := m.c.v.tokens[id]
	if len(t) == 0 {
		return false
	}
	g := m.c.g
	s := m.state
	for _, b := range t {
		if s = g.step(s, b); s == 0 {
			return false
		}
	}
	return true
}

// Accept moves past token id; ErrRejected (state unchanged) if the grammar
// does not allow it.
func (m *Matcher) Accept(id int) error {
	if !m.Allowed(id) {
		return fmt.Errorf("token %d: %w", id, ErrRejected)
	}
	if m.c.v.isEOS[id] {
		m.ended = true
		return nil
	}
	g := m.c.g
	for _, b := range m.c.v.tokens[id] {
		m.state = g.step(m.state, b)
	}
	return nil
}

// AcceptBytes moves past text (a forced prefix, say); ErrRejected (state
// unchanged) if the grammar does not allow it.
func (m *Matcher) AcceptBytes(text []byte) error {
	if m.ended {
		return ErrRejected
	}
	s := m.state
	for _, b := range text {
		if s = m.c.g.step(s, b); s == 0 {
			return ErrRejected
		}
	}
	m.state = s
	return nil
}

// CanEnd reports whether the text so far is a complete value: the
// end-of-sequence ids are allowed.
func (m *Matcher) CanEnd() bool { return !m.ended && m.c.g.accepts(m.state) }

// Done reports whether the sequence must end: an end-of-sequence id was
// accepted, or the value is complete and nothing may follow it.
func (m *Matcher) Done() bool { return m.ended || m.c.g.isFinal(m.state) }

// countMask counts the set bits of a mask.
func countMask(mask []uint64) int {
	n := 0
	for _, w := range mask {
		n += bits.OnesCount64(w)
	}
	return n
}

// MaskLogits sets the logit of every id not in mask to -Inf. Logits past
// the mask's ids (a model's padded vocabulary) are masked too.
func MaskLogits(logits []float32, mask []uint64) {
	inf := float32(math.Inf(-1))
	for w := 0; w*64 < len(logits); w++ {
		var bitsW uint64
		if w < len(mask) {
			bitsW = mask[w]
		}
		lo, hi := w*64, min(w*64+64, len(logits))
		switch bitsW {
		case ^uint64(0):
		case 0:
			for i := lo; i < hi; i++ {
				logits[i] = inf
			}
		default:
			for z := ^bitsW; z != 0; z &= z - 1 {
				if i := lo + bits.TrailingZeros64(z); i < hi {
					logits[i] = inf
				}
			}
		}
	}
}
