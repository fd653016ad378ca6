package grammar

import (
	"encoding/json"
	"math/big"
	"strings"
)

// digits is n to m decimal digits.
func (n *nfa) digits(min, max int) frag {
	in := n.state()
	out := n.state()
	cur := in
	for i := 0; i < max; i++ {
		if i >= min {
			n.eps(cur, out)
		}
		nx := n.state()
		n.edge(cur, '0', '9', nx)
		cur = nx
	}
	n.eps(cur, out)
	return frag{in, out}
}

// uintRange is the canonical decimal form (no leading zeros) of every
// integer in [lo, hi], lo >= 0.
func (n *nfa) uintRange(lo, hi *big.Int) frag {
	if lo.Cmp(hi) > 0 {
		return n.none()
	}
	a, b := lo.String(), hi.String()
	var fs []frag
	for l := len(a); l <= len(b); l++ {
		x, y := a, b
		if l > len(a) {
			x = "1" + strings.Repeat("0", l-1)
		}
		if l < len(b) {
			y = strings.Repeat("9", l)
		}
		fs = append(fs, n.sameLen(x, y))
	}
	return n.alt(fs...)
}

// sameLen is the digit strings of x's length from x to y (x <= y).
func (n *nfa) sameLen(x, y string) frag {
	if len(x) == 1 {
		return n.rng(x[0], y[0])
	}
	if x[0] == y[0] {
		return n.seq(n.rng(x[0], x[0]), n.sameLen(x[1:], y[1:]))
	}
	rest := len(x) - 1
	if strings.Trim(x[1:], "0") == "" && strings.Trim(y[1:], "9") == "" {
		return n.seq(n.rng(x[0], y[0]), n.digits(rest, rest))
	}
	fs := []frag{n.seq(n.rng(x[0], x[0]), n.sameLen(x[1:], strings.Repeat("9", rest)))}
	if x[0]+1 <= y[0]-1 {
		fs = append(fs, n.seq(n.rng(x[0]+1, y[0]-1), n.digits(rest, rest)))
	}
	fs = append(fs, n.seq(n.rng(y[0], y[0]), n.sameLen(strings.Repeat("0", rest), y[1:])))
	return n.alt(fs...)
}

// intRange is every integer in [lo, hi] in canonical JSON form ("-0" is not
// produced).
func (n *nfa) intRange(lo, hi *big.Int) frag {
	var fs []frag
	zero := big.NewInt(0)
	if lo.Sign() < 0 {
		// -x for x in [max(1, -hi), -lo]
		l := new(big.Int).Neg(hi)
		if l.Cmp(big.NewInt(1)) < 0 {
			l = big.NewInt(1)
		}
		if h := new(big.Int).Neg(lo); l.Cmp(h) <= 0 {
			fs = append(fs, n.seq(n.lit("-"), n.uintRange(l, h)))
		}
	}
	if hi.Sign() >= 0 {
		l := lo
		if l.Sign() < 0 {
			l = zero
		}
		fs = append(fs, n.uintRange(l, hi))
	}
	if len(fs) == 0 {
		return n.none()
	}
	return n.alt(fs...)
}

// bound is one side of a number's range; nil *bound is unbounded.
type bound struct {
	v    *big.Int
	excl bool
}

// fraction forms for a decimal with integer part I.
const (
	fracAny = iota
	fracZero
	fracNonzero
)

func (n *nfa) frac(kind, max int) frag {
	switch kind {
	case fracAny:
		return n.opt(n.seq(n.lit("."), n.digits(1, max)))
	case fracZero:
		in := n.state()
		out := n.state()
		n.eps(in, out)
		z := n.lit(".")
		n.eps(in, z.in)
		cur := z.out
		for i := 0; i < max; i++ {
			nx := n.state()
			n.edge(cur, '0', '0', nx)
			n.eps(nx, out)
			cur = nx
		}
		return frag{in, out}
	}
	// "." then up to max digits with at least one non-zero.
	in := n.state()
	out := n.state()
	z := n.state() // only zeros so far
	n.edge(in, '.', '.', z)
	nz := make([]int32, max+1) // nz[i]: i digits read, a non-zero among them
	zs := make([]int32, max+1)
	zs[0] = z
	for i := 1; i <= max; i++ {
		zs[i] = n.state()
		nz[i] = n.state()
		n.eps(nz[i], out)
	}
	for i := 0; i < max; i++ {
		n.edge(zs[i], '0', '0', zs[i+1])
		n.edge(zs[i], '1', '9', nz[i+1])
		if i > 0 {
			n.edge(nz[i], '0', '9', nz[i+1])
		}
	}
	return frag{in, out}
}

// magnitude is |x| = I.F for x in the range (l, h) of non-negative
// integers (h nil: up to the digit cap), with fraction digits up to fd.
func (n *nfa) magnitude(l, h *bound, cap *big.Int, fd int) frag {
	one := big.NewInt(1)
	lo := l.v
	var fs []frag
	if h == nil {
		start := lo
		if l.excl {
			fs = append(fs, n.seq(n.uintRange(lo, lo), n.frac(fracNonzero, fd)))
			start = new(big.Int).Add(lo, one)
		}
		fs = append(fs, n.seq(n.uintRange(start, cap), n.frac(fracAny, fd)))
		return n.alt(fs...)
	}
	hi := h.v
	switch lo.Cmp(hi) {
	case 1:
		return n.none()
	case 0:
		if l.excl || h.excl {
			return n.none()
		}
		return n.seq(n.uintRange(lo, lo), n.frac(fracZero, fd))
	}
	if l.excl {
		fs = append(fs, n.seq(n.uintRange(lo, lo), n.frac(fracNonzero, fd)))
	} else {
		fs = append(fs, n.seq(n.uintRange(lo, lo), n.frac(fracAny, fd)))
	}
	if mlo, mhi := new(big.Int).Add(lo, one), new(big.Int).Sub(hi, one); mlo.Cmp(mhi) <= 0 {
		fs = append(fs, n.seq(n.uintRange(mlo, mhi), n.frac(fracAny, fd)))
	}
	if !h.excl {
		fs = append(fs, n.seq(n.uintRange(hi, hi), n.frac(fracZero, fd)))
	}
	return n.alt(fs...)
}

// numberRange is every decimal (no exponent) in the range between lo and hi
// (nil: unbounded), with integer parts of at most the cap.
func (n *nfa) numberRange(lo, hi *bound, cap *big.Int, fd int) frag {
	zero := big.NewInt(0)
	var fs []frag
	// Negative values: -|x|.
	if lo == nil || lo.v.Sign() < 0 {
		var ml, mh *bound
		if hi != nil && hi.v.Sign() < 0 {
			ml = &bound{new(big.Int).Neg(hi.v), hi.excl}
		} else {
			ml = &bound{zero, true} // strictly negative: "-0" is left to the other side
		}
		if lo != nil {
			mh = &bound{new(big.Int).Neg(lo.v), lo.excl}
		}
		fs = append(fs, n.seq(n.lit("-"), n.magnitude(ml, mh, cap, fd)))
	}
	// Non-negative values.
	if hi == nil || hi.v.Sign() > 0 || (hi.v.Sign() == 0 && !hi.excl) {
		pl := &bound{zero, false}
		if lo != nil && lo.v.Sign() >= 0 {
			pl = lo
		}
		fs = append(fs, n.magnitude(pl, hi, cap, fd))
	}
	if len(fs) == 0 {
		return n.none()
	}
	return n.alt(fs...)
}

// anyNumber is a JSON number with an integer part of at most id digits, a
// fraction of at most fd and an exponent of at most two digits.
func (n *nfa) anyNumber(id, fd int) frag {
	intPart := n.alt(n.lit("0"), n.seq(n.rng('1', '9'), n.digits(0, id-1)))
	exp := n.opt(n.seq(n.alt(n.lit("e"), n.lit("E")), n.opt(n.alt(n.lit("+"), n.lit("-"))), n.digits(1, 2)))
	return n.seq(n.opt(n.lit("-")), intPart, n.frac(fracAny, fd), exp)
}

// numBound reads a bound keyword as a rational.
func numBound(s *object, k, path string) (*big.Rat, bool, error) {
	v, ok := s.get(k)
	if !ok {
		return nil, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return nil, false, &SchemaError{Path: ptr(path, k), Msg: "must be a number"}
	}
	r, ok := new(big.Rat).SetString(string(n))
	if !ok {
		return nil, false, &SchemaError{Path: ptr(path, k), Msg: "must be a number"}
	}
	// A bound far beyond any digit cap would make big integers; clip.
	lim := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(40), nil))
	if r.Cmp(lim) > 0 {
		r = lim
	}
	if r.Cmp(new(big.Rat).Neg(lim)) < 0 {
		r = new(big.Rat).Neg(lim)
	}
	return r, true, nil
}

// bounds reads minimum/maximum and their exclusive forms (a number, or
// the boolean of draft 4) as the tighter lower and upper bounds.
func bounds(s *object, path string) (lo, hi *big.Rat, loEx, hiEx bool, err error) {
	pick := func(incl, excl string, lower bool) (*big.Rat, bool, error) {
		r, ok, err := numBound(s, incl, path)
		if err != nil {
			return nil, false, err
		}
		ex := false
		if v, has := s.get(excl); has {
			if b, isBool := v.(bool); isBool {
				ex = b && ok
			} else {
				e, _, err := numBound(s, excl, path)
				if err != nil {
					return nil, false, err
				}
				if !ok || (lower && e.Cmp(r) >= 0) || (!lower && e.Cmp(r) <= 0) {
					r, ok, ex = e, true, true
				}
			}
		}
		if !ok {
			return nil, false, nil
		}
		return r, ex, nil
	}
	if lo, loEx, err = pick("minimum", "exclusiveMinimum", true); err != nil {
		return
	}
	hi, hiEx, err = pick("maximum", "exclusiveMaximum", false)
	return
}

func (c *compiler) number(s *object, integer bool, path string) (frag, error) {
	lo, hi, loEx, hiEx, err := bounds(s, path)
	if err != nil {
		return frag{}, err
	}
	if lo == nil && hi == nil {
		if integer {
			neg := new(big.Int).Neg(c.cap)
			return c.n.intRange(neg, c.cap), nil
		}
		return c.n.anyNumber(c.opts.IntDigits, c.opts.FracDigits), nil
	}
	if integer {
		l := new(big.Int).Neg(c.cap)
		h := new(big.Int).Set(c.cap)
		if lo != nil {
			l = ceil(lo)
			if loEx && lo.IsInt() {
				l.Add(l, big.NewInt(1))
			}
		}
		if hi != nil {
			h = floor(hi)
			if hiEx && hi.IsInt() {
				h.Sub(h, big.NewInt(1))
			}
		}
		if l.Cmp(new(big.Int).Neg(c.cap)) < 0 {
			l.Neg(c.cap)
		}
		if h.Cmp(c.cap) > 0 {
			h.Set(c.cap)
		}
		return c.n.intRange(l, h), nil
	}
	var lb, hb *bound
	for _, x := range []struct {
		r  *big.Rat
		ex bool
		b  **bound
		k  string
	}{{lo, loEx, &lb, "minimum"}, {hi, hiEx, &hb, "maximum"}} {
		if x.r == nil {
			continue
		}
		if !x.r.IsInt() {
			return frag{}, &UnsupportedError{Keyword: x.k, Path: path, Reason: "a number's bounds must be whole numbers (an integer's may be any)"}
		}
		v := x.r.Num()
		if v.CmpAbs(c.cap) > 0 {
			if (x.k == "minimum") == (v.Sign() < 0) {
				continue // beyond the cap on the open side: the cap bounds it
			}
			// beyond the cap on the closed side: nothing within the cap
			return c.n.none(), nil
		}
		*x.b = &bound{new(big.Int).Set(v), x.ex}
	}
	return c.n.numberRange(lb, hb, c.cap, c.opts.FracDigits), nil
}

func ceil(r *big.Rat) *big.Int {
	q, m := new(big.Int).DivMod(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return q
}

func floor(r *big.Rat) *big.Int {
	q, _ := new(big.Int).DivMod(r.Num(), r.Denom(), new(big.Int))
	return q
}
