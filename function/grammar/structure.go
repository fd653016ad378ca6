package grammar

import (
	"sort"
	"strconv"
	"strings"
)

type property struct {
	name     string
	schema   any
	required bool
}

// object is properties in the schema's order, each required one present and
// each optional one present or not; then, where additionalProperties
// allows, more members whose names are none of the listed ones.
func (c *compiler) object(s *object, path string, depth int) (frag, error) {
	n := c.n
	var props []property
	index := map[string]int{}
	if pv, ok := s.get("properties"); ok {
		po, ok := pv.(*object)
		if !ok {
			return frag{}, &SchemaError{Path: ptr(path, "properties"), Msg: "must be an object"}
		}
		for _, k := range po.keys {
			index[k] = len(props)
			props = append(props, property{name: k, schema: po.m[k]})
		}
	}
	var addl any = true
	if av, ok := s.get("additionalProperties"); ok {
		addl = av
	}
	if rv, ok := s.get("required"); ok {
		rs, ok := rv.([]any)
		if !ok {
			return frag{}, &SchemaError{Path: ptr(path, "required"), Msg: "must be an array of strings"}
		}
		for _, r := range rs {
			name, ok := r.(string)
			if !ok {
				return frag{}, &SchemaError{Path: ptr(path, "required"), Msg: "must be an array of strings"}
			}
			i, ok := index[name]
			if !ok {
				// Required but not listed: it takes additionalProperties' schema.
				if b, isBool := addl.(bool); isBool && !b {
					return n.none(), nil
				}
				i = len(props)
				index[name] = i
				props = append(props, property{name: name, schema: addl})
			}
			props[i].required = true
		}
	}
	ws := c.opts.Whitespace
	in := n.state()
	open := n.lit("{")
	n.eps(in, open.in)
	first := open.out // F_i: no member yet
	more := n.state() // M_i: a member written
	for _, p := range props {
		pp := ptr(ptr(path, "properties"), p.name)
		v, err := c.schema(p.schema, pp, depth+1)
		if err != nil {
			return frag{}, err
		}
		entry := n.state()
		w := n.ws(ws)
		n.eps(first, w.in)
		n.eps(w.out, entry)
		comma := n.seq(n.ws(ws), n.lit(","), n.ws(ws))
		n.eps(more, comma.in)
		n.eps(comma.out, entry)
		member := n.seq(n.lit(string(appendString(nil, p.name))), n.ws(ws), n.lit(":"), n.ws(ws), v)
		n.eps(entry, member.in)
		nfirst, nmore := n.state(), n.state()
		n.eps(member.out, nmore)
		if !p.required {
			n.eps(first, nfirst)
			n.eps(more, nmore)
		}
		first, more = nfirst, nmore
		if n.full {
			break
		}
	}
	if b, isBool := addl.(bool); !isBool || b {
		var v frag
		if isBool {
			v = c.anyValue(c.opts.AnyDepth)
		} else {
			var err error
			if v, err = c.schema(addl, ptr(path, "additionalProperties"), depth+1); err != nil {
				return frag{}, err
			}
		}
		names := make([]string, 0, len(props))
		for _, p := range props {
			names = append(names, p.name)
		}
		entry := n.state()
		w := n.ws(ws)
		n.eps(first, w.in)
		n.eps(w.out, entry)
		comma := n.seq(n.ws(ws), n.lit(","), n.ws(ws))
		n.eps(more, comma.in)
		n.eps(comma.out, entry)
		member := n.seq(n.otherName(names), n.ws(ws), n.lit(":"), n.ws(ws), v)
		n.eps(entry, member.in)
		n.eps(member.out, more)
	}
	out := n.state()
	n.edge(first, '}', '}', out)
	closing := n.seq(n.ws(ws), n.lit("}"))
	n.eps(more, closing.in)
	n.eps(closing.out, out)
	return frag{in, out}, nil
}

// otherName is a JSON string, without escapes, that is none of names.
func (n *nfa) otherName(names []string) frag {
	in, out := n.state(), n.state()
	free := n.state() // left the names behind: any text
	n.jsonChar(free, free, false)
	n.edge(free, '"', '"', out)
	// A name that needs an escape is never written without one: it is not
	// among the texts to exclude (and its raw bytes would not be JSON).
	var sorted []string
	for _, nm := range names {
		if !strings.ContainsFunc(nm, func(r rune) bool { return r < 0x20 || r == '"' || r == '\\' }) {
			sorted = append(sorted, nm)
		}
	}
	sort.Strings(sorted)
	root := n.state()
	n.edge(in, '"', '"', root)
	n.trieNames(root, "", sorted, free, out)
	return frag{in, out}
}

// trieNames adds the state for text prefix (at a character boundary or
// inside a multi-byte character) given the names that start with it.
func (n *nfa) trieNames(s int32, prefix string, names []string, free, out int32) {
	// Children by next byte.
	isName := false
	var next []byte
	groups := map[byte][]string{}
	for _, nm := range names {
		if len(nm) == len(prefix) {
			isName = true
			continue
		}
		b := nm[len(prefix)]
		if _, ok := groups[b]; !ok {
			next = append(next, b)
		}
		groups[b] = append(groups[b], nm)
	}
	// Where in a UTF-8 character is the prefix?
	need, lo, hi := utf8Need(prefix)
	if need == 0 {
		if !isName {
			n.edge(s, '"', '"', out)
		}
		// Any character start not a child byte leads to free text.
		tmp := n.state()
		n.jsonChar(tmp, free, false)
		for _, e := range n.edges(tmp) {
			n.splitEdge(s, e, next)
		}
	} else {
		// Continuation bytes lo..hi; on a differing one the character
		// ends in free text after need-1 more continuation bytes.
		rest := free
		for i := 1; i < need; i++ {
			st := n.state()
			n.edge(st, 0x80, 0xBF, rest)
			rest = st
		}
		n.splitEdge(s, edge{lo, hi, rest}, next)
	}
	for _, b := range next {
		child := n.state()
		n.edge(s, b, b, child)
		n.trieNames(child, prefix+string([]byte{b}), groups[b], free, out)
	}
}

// splitEdge adds e from s without the bytes in skip.
func (n *nfa) splitEdge(s int32, e edge, skip []byte) {
	lo := int(e.lo)
	for b := int(e.lo); b <= int(e.hi)+1; b++ {
		cut := b == int(e.hi)+1
		for _, x := range skip {
			if int(x) == b {
				cut = true
			}
		}
		if cut {
			if lo < b {
				n.edge(s, byte(lo), byte(b-1), e.to)
			}
			lo = b + 1
		}
	}
}

// utf8Need says, for text ending inside a multi-byte character, how many
// continuation bytes remain and the range of the next one; need 0 at a
// character boundary.
func utf8Need(p string) (need int, lo, hi byte) {
	i := len(p)
	k := 0
	for i > 0 && p[i-1]&0xC0 == 0x80 && k < 3 {
		i--
		k++
	}
	if i == 0 || p[i-1] < 0xC0 {
		return 0, 0, 0
	}
	lead := p[i-1]
	size := 2
	switch {
	case lead >= 0xF0:
		size = 4
	case lead >= 0xE0:
		size = 3
	}
	need = size - 1 - k
	if need <= 0 {
		return 0, 0, 0
	}
	lo, hi = 0x80, 0xBF
	if k == 0 {
		switch lead {
		case 0xE0:
			lo = 0xA0
		case 0xED:
			hi = 0x9F
		case 0xF0:
			lo = 0x90
		case 0xF4:
			hi = 0x8F
		}
	}
	return need, lo, hi
}

// array is prefixItems then items, between minItems and maxItems.
func (c *compiler) array(s *object, path string, depth int) (frag, error) {
	n := c.n
	if v, ok := s.get("uniqueItems"); ok && v != false {
		return frag{}, &UnsupportedError{Keyword: "uniqueItems", Path: path}
	}
	minN, _, err := intValue(s, "minItems", path)
	if err != nil {
		return frag{}, err
	}
	maxN, hasMax, err := intValue(s, "maxItems", path)
	if err != nil {
		return frag{}, err
	}
	var prefix []any
	if pv, ok := s.get("prefixItems"); ok {
		if prefix, ok = pv.([]any); !ok {
			return frag{}, &SchemaError{Path: ptr(path, "prefixItems"), Msg: "must be an array"}
		}
	}
	var items any = true
	if iv, ok := s.get("items"); ok {
		if _, isArr := iv.([]any); isArr {
			return frag{}, &UnsupportedError{Keyword: "items", Path: path, Reason: "an array of schemas (use prefixItems)"}
		}
		items = iv
	}
	if b, ok := items.(bool); ok && !b {
		if !hasMax || maxN > len(prefix) {
			maxN, hasMax = len(prefix), true
		}
	}
	if hasMax && maxN < minN {
		return n.none(), nil
	}
	// Positions to unroll: up to maxItems, or to where the rest repeat.
	unroll := maxN
	if !hasMax {
		unroll = max(minN, len(prefix))
	}
	var itemF frag
	var itemLo, itemHi int32
	itemBuilt := false
	elem := func(i int) (frag, error) {
		if i < len(prefix) {
			return c.schema(prefix[i], ptr(ptr(path, "prefixItems"), strconv.Itoa(i)), depth+1)
		}
		if !itemBuilt {
			itemLo = n.size()
			f, err := c.schema(items, ptr(path, "items"), depth+1)
			if err != nil {
				return frag{}, err
			}
			itemF, itemHi, itemBuilt = f, n.size(), true
			return f, nil
		}
		return n.clone(itemF, itemLo, itemHi), nil
	}
	ws := c.opts.Whitespace
	in := n.state()
	open := n.lit("[")
	n.eps(in, open.in)
	out := n.state()
	closing := n.seq(n.ws(ws), n.lit("]"))
	n.eps(closing.out, out)
	cur := open.out // i elements written
	if minN == 0 {
		n.edge(cur, ']', ']', out)
	}
	for i := 0; i < unroll; i++ {
		if err := c.check(path, depth); err != nil {
			return frag{}, err
		}
		e, err := elem(i)
		if err != nil {
			return frag{}, err
		}
		var sep frag
		if i == 0 {
			sep = n.ws(ws)
		} else {
			sep = n.seq(n.ws(ws), n.lit(","), n.ws(ws))
		}
		step := n.seq(sep, e)
		n.eps(cur, step.in)
		cur = step.out
		if i+1 >= minN {
			n.eps(cur, closing.in)
		}
	}
	if !hasMax {
		// The rest repeat: one copy of the item that the comma loops back to.
		e, err := elem(unroll)
		if err != nil {
			return frag{}, err
		}
		entry := n.state()
		if unroll == 0 {
			first := n.ws(ws)
			n.eps(cur, first.in)
			n.eps(first.out, entry)
		} else {
			comma := n.seq(n.ws(ws), n.lit(","), n.ws(ws))
			n.eps(cur, comma.in)
			n.eps(comma.out, entry)
		}
		n.eps(entry, e.in)
		comma := n.seq(n.ws(ws), n.lit(","), n.ws(ws))
		n.eps(e.out, comma.in)
		n.eps(comma.out, entry)
		n.eps(e.out, closing.in)
	}
	return frag{in, out}, nil
}

// anyValue is any JSON value nesting at most depth arrays and objects.
// The first one built for a depth is cloned for the others.
func (c *compiler) anyValue(depth int) frag {
	n := c.n
	if r, ok := c.anyCache[depth]; ok {
		return n.clone(r.f, r.lo, r.hi)
	}
	lo := n.size()
	fs := []frag{n.lit("null"), n.lit("true"), n.lit("false"),
		n.anyNumber(c.opts.IntDigits, c.opts.FracDigits), n.stringLen(0, -1)}
	if depth > 0 {
		fs = append(fs, c.anyArray(depth), c.anyObject(depth))
	}
	f := n.alt(fs...)
	c.anyCache[depth] = cached{f, lo, n.size()}
	return f
}

type cached struct {
	f      frag
	lo, hi int32
}

// anyArray is an array of values nesting at most depth-1 levels.
func (c *compiler) anyArray(depth int) frag {
	return c.anyList("[", "]", func() frag { return c.anyValue(depth - 1) })
}

// anyObject is an object whose values nest at most depth-1 levels.
func (c *compiler) anyObject(depth int) frag {
	n := c.n
	ws := c.opts.Whitespace
	return c.anyList("{", "}", func() frag {
		return n.seq(n.stringLen(0, -1), n.ws(ws), n.lit(":"), n.ws(ws), c.anyValue(depth-1))
	})
}

// anyList is open, then elements separated by commas, then close, with one
// copy of the element that the comma loops back to.
func (c *compiler) anyList(open, close string, elem func() frag) frag {
	n := c.n
	ws := c.opts.Whitespace
	o := n.lit(open)
	out := n.state()
	n.edge(o.out, close[0], close[0], out)
	entry := n.state()
	first := n.ws(ws)
	n.eps(o.out, first.in)
	n.eps(first.out, entry)
	e := elem()
	n.eps(entry, e.in)
	comma := n.seq(n.ws(ws), n.lit(","), n.ws(ws))
	n.eps(e.out, comma.in)
	n.eps(comma.out, entry)
	closing := n.seq(n.ws(ws), n.lit(close))
	n.eps(e.out, closing.in)
	n.eps(closing.out, out)
	return frag{o.in, out}
}
