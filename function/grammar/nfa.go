package grammar

// The compiler builds a Thompson NFA over bytes, then determinizes it
// (dfa.go). Every fragment's states are allocated contiguously and its edges
// stay inside them, so a fragment is cloned by copying its index range.

type edge struct {
	lo, hi byte
	to     int32
}

type nstate struct {
	eps   []int32
	edges []edge
}

type nfa struct {
	states []nstate
	max    int  // state limit; over it, full is set and building continues cheaply
	full   bool // the limit was hit
}

// frag is a fragment: entered at in, left from out.
type frag struct{ in, out int32 }

func (n *nfa) state() int32 {
	if len(n.states) >= n.max {
		n.full = true
		// Keep handing out one scratch state so that builders need no error
		// paths; the compile fails on full before it determinizes.
		if len(n.states) > 0 {
			n.states[len(n.states)-1] = nstate{}
			return int32(len(n.states) - 1)
		}
	}
	n.states = append(n.states, nstate{})
	return int32(len(n.states) - 1)
}

func (n *nfa) size() int32 { return int32(len(n.states)) }

func (n *nfa) eps(from, to int32) { n.states[from].eps = append(n.states[from].eps, to) }

func (n *nfa) edge(from int32, lo, hi byte, to int32) {
	n.states[from].edges = append(n.states[from].edges, edge{lo, hi, to})
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
	if n.full || int(hi-lo)+len(n.states) > n.max {
		n.full = true
		return n.none()
	}
	// Edges to states outside [lo, hi) were added by the fragment's users
	// after it was built: they are not part of it.
	off := int32(len(n.states)) - lo
	for i := lo; i < hi; i++ {
		s := n.states[i]
		c := nstate{}
		for _, e := range s.eps {
			if e >= lo && e < hi {
				c.eps = append(c.eps, e+off)
			}
		}
		for _, e := range s.edges {
			if e.to >= lo && e.to < hi {
				c.edges = append(c.edges, edge{e.lo, e.hi, e.to + off})
			}
		}
		n.states = append(n.states, c)
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
