package grammar

import (
	"encoding/binary"
	"slices"
	"time"
)

// Grammar is a compiled schema: a deterministic automaton over bytes whose
// every live state can still reach an accepting one. It is immutable and
// safe for concurrent use.
type Grammar struct {
	nclass int
	class  [256]uint8
	// trans[row+class] is the next state's row; a state's row is its
	// number times nclass, so that a step is one load. Row 0 is the dead
	// state.
	trans  []int32
	accept []bool // by state number: the text so far is a complete value
	final  []bool // accepting and nothing may follow
	start  int32  // row
	// run[s]: how many bytes of plain string text (printable ASCII but '"'
	// and '\\') state s accepts whatever they are, each step going to one
	// state; 255: without end. magic turns a row into its state number
	// without a division: row*magic>>32.
	run   []uint8
	magic uint64
	// text[s*8+u]: how many bytes of any valid string text (utf8Step from
	// UTF-8 state u) state s accepts; 255: without end.
	text []uint8
	// skips[s]: run[s] or some text[s*8+u] is not 0.
	skips []bool
}

// States is the number of automaton states (the dead state included).
func (g *Grammar) States() int { return len(g.accept) }

func (g *Grammar) step(row int32, b byte) int32 {
	return g.trans[row+int32(g.class[b])]
}

func (g *Grammar) accepts(row int32) bool { return g.accept[int(row)/g.nclass] }

func (g *Grammar) isFinal(row int32) bool { return g.final[int(row)/g.nclass] }

// Match reports whether text is a prefix of some accepted text (ok) and
// whether it is accepted whole (complete).
func (g *Grammar) Match(text []byte) (ok, complete bool) {
	s := g.start
	for _, b := range text {
		if s = g.step(s, b); s == 0 {
			return false, false
		}
	}
	return true, g.accepts(s)
}

// determinize is the subset construction over byte classes, then the
// removal of states that cannot reach acceptance.
func determinize(n *nfa, f frag, maxStates int, deadline time.Time, budget time.Duration) (*Grammar, error) {
	g := &Grammar{}
	// Byte classes: bytes no edge tells apart share a class.
	var cut [257]bool
	cut[0] = true
	for _, l := range n.links {
		if !l.eps {
			cut[l.lo] = true
			cut[int(l.hi)+1] = true
		}
	}
	cls := -1
	for b := 0; b < 256; b++ {
		if cut[b] {
			cls++
		}
		g.class[b] = uint8(cls)
	}
	nc := cls + 1
	g.nclass = nc

	accept := f.out
	// important: states with edges, or the accepting one; the others are
	// only passed through and do not tell sets apart.
	mark := make([]uint32, len(n.head))
	gen := uint32(0)
	var stack, scratch []int32
	// closure is the important states reached from seeds, sorted, in a
	// scratch slice that add copies when the set is new.
	closure := func(seeds []int32) []int32 {
		gen++
		set := scratch[:0]
		stack = append(stack[:0], seeds...)
		for _, s := range seeds {
			mark[s] = gen
		}
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if n.bytes[s] || s == accept {
				set = append(set, s)
			}
			for l := n.head[s]; l >= 0; l = n.links[l].next {
				if !n.links[l].eps {
					continue
				}
				if t := n.links[l].to; mark[t] != gen {
					mark[t] = gen
					stack = append(stack, t)
				}
			}
		}
		slices.Sort(set)
		scratch = set
		return set
	}
	var kb []byte
	key := func(set []int32) []byte {
		kb = kb[:0]
		for _, s := range set {
			kb = binary.LittleEndian.AppendUint32(kb, uint32(s))
		}
		return kb
	}
	ids := map[string]int32{}
	sets := [][]int32{nil} // state 0: dead
	trans := make([]int32, nc)
	accepts := []bool{false}
	add := func(set []int32) (int32, error) {
		if len(set) == 0 {
			return 0, nil
		}
		k := key(set)
		if id, ok := ids[string(k)]; ok {
			return id, nil
		}
		set = slices.Clone(set)
		if len(sets) >= maxStates {
			return 0, &LimitError{Limit: "states", Max: int64(maxStates)}
		}
		id := int32(len(sets))
		ids[string(k)] = id
		sets = append(sets, set)
		if len(trans)+nc > cap(trans) {
			// Double: append's growth for large slices copies too often.
			t := make([]int32, len(trans), 2*cap(trans)+nc)
			copy(t, trans)
			trans = t
		}
		trans = trans[:len(trans)+nc] // never written: zero
		acc := false
		for _, s := range set {
			if s == accept {
				acc = true
			}
		}
		accepts = append(accepts, acc)
		return id, nil
	}
	start, err := add(closure([]int32{f.in}))
	if err != nil {
		return nil, err
	}
	buckets := make([][]int32, nc)
	for cur := 1; cur < len(sets); cur++ {
		if cur&255 == 0 && time.Now().After(deadline) {
			return nil, &LimitError{Limit: "compile time", Max: int64(budget)}
		}
		for c := range buckets {
			buckets[c] = buckets[c][:0]
		}
		for _, s := range sets[cur] {
			for l := n.head[s]; l >= 0; l = n.links[l].next {
				e := &n.links[l]
				if e.eps {
					continue
				}
				for c := g.class[e.lo]; ; c++ {
					buckets[c] = append(buckets[c], e.to)
					if c == g.class[e.hi] {
						break
					}
				}
			}
		}
		for c := 0; c < nc; c++ {
			if len(buckets[c]) == 0 {
				continue
			}
			id, err := add(closure(buckets[c]))
			if err != nil {
				return nil, err
			}
			trans[cur*nc+c] = id
		}
	}
	if start == 0 {
		return nil, &SchemaError{Path: "#", Msg: "no JSON value satisfies the schema within the compiler's bounds"}
	}
	return prune(g, trans, accepts, start)
}

// prune drops the states from which no accepting state can be reached, so
// that a token is allowed only if the text can still be completed.
func prune(g *Grammar, trans []int32, accepts []bool, start int32) (*Grammar, error) {
	nc := g.nclass
	ns := len(accepts)
	// Reverse edges in compressed form.
	cnt := make([]int32, ns+1)
	for i, t := range trans {
		if t != 0 && int32(i/nc) != t {
			cnt[t+1]++
		}
	}
	for i := 1; i <= ns; i++ {
		cnt[i] += cnt[i-1]
	}
	rev := make([]int32, cnt[ns])
	fill := append([]int32(nil), cnt[:ns]...)
	for i, t := range trans {
		if t != 0 && int32(i/nc) != t {
			rev[fill[t]] = int32(i / nc)
			fill[t]++
		}
	}
	live := make([]bool, ns)
	var stack []int32
	for s := 1; s < ns; s++ {
		if accepts[s] {
			live[s] = true
			stack = append(stack, int32(s))
		}
	}
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, p := range rev[cnt[s]:cnt[s+1]] {
			if !live[p] {
				live[p] = true
				stack = append(stack, p)
			}
		}
	}
	if !live[start] {
		return nil, &SchemaError{Path: "#", Msg: "no JSON value satisfies the schema within the compiler's bounds"}
	}
	// Renumber the live states reachable from start, start first.
	newID := make([]int32, ns)
	order := []int32{start}
	newID[start] = 1
	for i := 0; i < len(order); i++ {
		s := order[i]
		for c := 0; c < nc; c++ {
			t := trans[int(s)*nc+c]
			if t != 0 && live[t] && newID[t] == 0 {
				newID[t] = int32(len(order) + 1)
				order = append(order, t)
			}
		}
	}
	m := len(order) + 1
	g.trans = make([]int32, m*nc)
	g.accept = make([]bool, m)
	g.final = make([]bool, m)
	for i, s := range order {
		id := i + 1
		g.accept[id] = accepts[s]
		out := false
		for c := 0; c < nc; c++ {
			t := trans[int(s)*nc+c]
			if t != 0 && live[t] {
				g.trans[id*nc+c] = newID[t] * int32(nc)
				out = true
			}
		}
		g.final[id] = accepts[s] && !out
	}
	g.start = int32(nc)
	g.plainRuns()
	g.textRuns()
	return g, nil
}

// textRuns computes text: for each (state, UTF-8 state) the distance to
// the nearest pair where some byte of text leads to the dead state, by a
// breadth-first search backwards from those pairs.
func (g *Grammar) textRuns() {
	nc := g.nclass
	ns := len(g.accept)
	type step struct {
		c  uint8
		u2 uint8
	}
	// For each UTF-8 state, the (class, next UTF-8 state) pairs of its bytes.
	var steps [8][]step
	for u := uint8(0); u < 8; u++ {
		seen := map[step]bool{}
		for b := 0; b < 256; b++ {
			if u2 := utf8Step(u, byte(b)); u2 >= 0 {
				st := step{g.class[b], uint8(u2)}
				if !seen[st] {
					seen[st] = true
					steps[u] = append(steps[u], st)
				}
			}
		}
	}
	np := ns * 8
	dist := make([]int32, np)
	for i := range dist {
		dist[i] = -1
	}
	cnt := make([]int32, np+1)
	var queue []int32
	for s := 1; s < ns; s++ {
		for u := 0; u < 8; u++ {
			x := s*8 + u
			bad := false
			for _, st := range steps[u] {
				t := int(uint64(g.trans[s*nc+int(st.c)]) * g.magic >> 32)
				if t == 0 {
					bad = true
					continue
				}
				cnt[t*8+int(st.u2)+1]++
			}
			if bad {
				dist[x] = 0
				queue = append(queue, int32(x))
			}
		}
	}
	for i := 1; i <= np; i++ {
		cnt[i] += cnt[i-1]
	}
	rev := make([]int32, cnt[np])
	fill := append([]int32(nil), cnt[:np]...)
	for s := 1; s < ns; s++ {
		for u := 0; u < 8; u++ {
			for _, st := range steps[u] {
				if t := int(uint64(g.trans[s*nc+int(st.c)]) * g.magic >> 32); t != 0 {
					y := t*8 + int(st.u2)
					rev[fill[y]] = int32(s*8 + u)
					fill[y]++
				}
			}
		}
	}
	for len(queue) > 0 {
		y := queue[0]
		queue = queue[1:]
		for _, x := range rev[cnt[y]:cnt[y+1]] {
			if dist[x] < 0 {
				dist[x] = dist[y] + 1
				queue = append(queue, x)
			}
		}
	}
	g.text = make([]uint8, np)
	g.skips = make([]bool, ns)
	defer func() {
		for x, t := range g.text {
			if t != 0 || g.run[x/8] != 0 {
				g.skips[x/8] = true
			}
		}
	}()
	for x, d := range dist {
		switch {
		case x < 8:
			// the dead state accepts nothing
		case d < 0 || d > 255:
			g.text[x] = 255
		default:
			g.text[x] = uint8(d)
		}
	}
}

func (g *Grammar) plainRuns() {
	nc := g.nclass
	ns := len(g.accept)
	g.magic = (1<<32 + uint64(nc) - 1) / uint64(nc)
	var classes []uint8
	seen := map[uint8]bool{}
	for b := 0; b < 256; b++ {
		if c := g.class[b]; plain(byte(b)) && !seen[c] {
			seen[c] = true
			classes = append(classes, c)
		}
	}
	// uniform[s]: the one state every plain byte leads to, or 0.
	uniform := func(s int) int {
		t := g.trans[s*nc+int(classes[0])]
		for _, c := range classes[1:] {
			if g.trans[s*nc+int(c)] != t {
				return 0
			}
		}
		return int(t) / nc
	}
	g.run = make([]uint8, ns)
	mark := make([]uint8, ns) // 1: on the current chain, 2: done
	var chain []int
	for s0 := 1; s0 < ns; s0++ {
		// Follow the uniform chain from s0 to a state already done, a
		// cycle or an end, then fill the runs back along it.
		chain = chain[:0]
		s, r := s0, 0
		for {
			if s == 0 {
				r = 0
				break
			}
			if mark[s] == 2 {
				r = int(g.run[s])
				break
			}
			if mark[s] == 1 {
				r = 255
				break
			}
			mark[s] = 1
			chain = append(chain, s)
			s = uniform(s)
		}
		for i := len(chain) - 1; i >= 0; i-- {
			s := chain[i]
			if uniform(s) == 0 {
				r = 0
			} else {
				r = min(r+1, 255)
			}
			g.run[s] = uint8(r)
			mark[s] = 2
		}
	}
}

// MaxLen is the length in bytes of the longest text the grammar accepts,
// and false when there is no longest (a string without maxLength, an array
// without maxItems, an unconstrained value's loops). For a bounded grammar
// it bounds the tokens a sequence may need (each token is at least a byte).
func (g *Grammar) MaxLen() (int, bool) {
	nc := g.nclass
	ns := len(g.accept)
	const (
		unseen = iota
		open
		closed
	)
	color := make([]uint8, ns)
	longest := make([]int, ns)
	type frame struct {
		s int
		c int
	}
	stack := []frame{{int(g.start) / nc, 0}}
	color[int(g.start)/nc] = open
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		if f.c == nc {
			best := 0
			for c := 0; c < nc; c++ {
				if t := int(g.trans[f.s*nc+c]) / nc; t != 0 {
					best = max(best, 1+longest[t])
				}
			}
			longest[f.s] = best
			color[f.s] = closed
			stack = stack[:len(stack)-1]
			continue
		}
		t := int(g.trans[f.s*nc+f.c]) / nc
		f.c++
		if t == 0 {
			continue
		}
		switch color[t] {
		case open:
			return 0, false
		case unseen:
			color[t] = open
			stack = append(stack, frame{t, 0})
		}
	}
	return longest[int(g.start)/nc], true
}
