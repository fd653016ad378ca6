package grammar

// The compiler builds a Thompson NFA over bytes, then determinizes it
// (dfa.go). Every fragment's states are allocated contiguously and its edges
// stay inside them, so a fragment is cloned by copying its index range.

type edge struct {
	lo, hi byte
	to     int32
}

// link is a state's edge (eps false: bytes lo..hi) or epsilon move, in a
// list per state: no pointers, so a large automaton costs the garbage
// collector nothing.
type link struct {
	to, next int32
	lo, hi   byte
	eps      bool
}

type nfa struct {
	head  []int32 // per state: its first link, or -1
	bytes []bool  // per state: it has a byte edge
	links []link
	max   int  // state limit; over it, full is set and building continues cheaply
	full  bool // the limit was hit
}

// frag is a fragment: entered at in, left from out.
type frag struct{ in, out int32 }

func (n *nfa) state() int32 {
	if len(n.head) >= n.max {
		n.full = true
		// Keep handing out one scratch state so that builders need no error
		// paths; the compile fails on full before it determinizes.
		if len(n.head) > 0 {
			n.head[len(n.head)-1] = -1
			return int32(len(n.head) - 1)
		}
	}
	n.head = append(n.head, -1)
	n.bytes = append(n.bytes, false)
	return int32(len(n.head) - 1)
}

func (n *nfa) size() int32 { return int32(len(n.head)) }

func (n *nfa) add(from int32, l link) {
	if n.full && len(n.links) > 4*n.max {
		return
	}
	l.next = n.head[from]
	n.head[from] = int32(len(n.links))
	n.links = append(n.links, l)
}

func (n *nfa) eps(from, to int32) { n.add(from, link{to: to, eps: true}) }

func (n *nfa) edge(from int32, lo, hi byte, to int32) {
	n.add(from, link{to: to, lo: lo, hi: hi})
	n.bytes[from] = true
}

// edges lists s's byte edges.
func (n *nfa) edges(s int32) []edge {
	var es []edge
	for l := n.head[s]; l >= 0; l = n.links[l].next {
		if k := n.links[l]; !k.eps {
			es = append(es, edge{k.lo, k.hi, k.to})
		}
	}
	return es
}

// empty matches the empty string.
func (n *nfa) empty() frag {
	s := n.state()
	return frag{s, s}
}

// none matches nothing: in and out are not connected.
func (n *nfa) none() frag { return frag{n.state(), n.state()} }

func (n *nfa) lit(s string) frag {
	in := n.state()
	cur := in
	for i := 0; i < len(s); i++ {
		nx := n.state()
		n.edge(cur, s[i], s[i], nx)
		cur = nx
	}
	return frag{in, cur}
}

func (n *nfa) rng(lo, hi byte) frag {
	in, out := n.state(), n.state()
	n.edge(in, lo, hi, out)
	return frag{in, out}
}

// seq joins fragments end to start.
func (n *nfa) seq(fs ...frag) frag {
	if len(fs) == 0 {
		return n.empty()
	}
	for i := 1; i < len(fs); i++ {
		n.eps(fs[i-1].out, fs[i].in)
	}
	return frag{fs[0].in, fs[len(fs)-1].out}
}

// alt is the union of fragments.
func (n *nfa) alt(fs ...frag) frag {
	if len(fs) == 1 {
		return fs[0]
	}
	in, out := n.state(), n.state()
	for _, f := range fs {
		n.eps(in, f.in)
		n.eps(f.out, out)
	}
	return frag{in, out}
}

func (n *nfa) opt(f frag) frag {
	in, out := n.state(), n.state()
	n.eps(in, f.in)
	n.eps(f.out, out)
	n.eps(in, out)
	return frag{in, out}
}

// star is f repeated zero or more times.
func (n *nfa) star(f frag) frag {
	in, out := n.state(), n.state()
	n.eps(in, f.in)
	n.eps(f.out, in)
	n.eps(in, out)
	return frag{in, out}
}

// clone copies the fragment f whose states are [lo, hi).
func (n *nfa) clone(f frag, lo, hi int32) frag {
	if n.full || int(hi-lo)+len(n.head) > n.max {
		n.full = true
		return n.none()
	}
	off := n.size() - lo
	for i := lo; i < hi; i++ {
		c := n.state()
		// Links to states outside [lo, hi) were added by the fragment's
		// users after it was built: they are not part of it.
		for l := n.head[i]; l >= 0; l = n.links[l].next {
			k := n.links[l]
			if k.to >= lo && k.to < hi {
				k.to += off
				n.add(c, k)
				if !k.eps {
					n.bytes[c] = true
				}
			}
		}
	}
	return frag{f.in + off, f.out + off}
}

// ws is up to max bytes of JSON whitespace.
func (n *nfa) ws(max int) frag {
	in := n.state()
	out := n.state()
	cur := in
	n.eps(cur, out)
	for i := 0; i < max; i++ {
		nx := n.state()
		for _, b := range []byte{' ', '\t', '\n', '\r'} {
			n.edge(cur, b, b, nx)
		}
		n.eps(nx, out)
		cur = nx
	}
	return frag{in, out}
}
