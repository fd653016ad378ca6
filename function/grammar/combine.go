package grammar

import (
	"fmt"
	"strconv"
	"strings"
)

// $ref resolution and the merging of allOf, and of anyOf/oneOf with the
// keywords beside them.

// resolve finds the schema a $ref names: "#", "#/$defs/x", any JSON
// pointer into this document.
func (c *compiler) resolve(ref any, path string) (any, string, error) {
	r, ok := ref.(string)
	if !ok {
		return nil, "", &SchemaError{Path: ptr(path, "$ref"), Msg: "must be a string"}
	}
	if !strings.HasPrefix(r, "#") {
		return nil, "", &UnsupportedError{Keyword: "$ref", Path: path, Reason: fmt.Sprintf("only references into this document (#...), not %q", r)}
	}
	if r != "#" && !strings.HasPrefix(r, "#/") {
		return nil, "", &UnsupportedError{Keyword: "$ref", Path: path, Reason: fmt.Sprintf("only JSON pointers, not anchors (%q)", r)}
	}
	cur := c.root
	if r != "#" {
		for _, tok := range strings.Split(r[2:], "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			switch v := cur.(type) {
			case *object:
				nx, ok := v.get(tok)
				if !ok {
					return nil, "", &SchemaError{Path: path, Msg: fmt.Sprintf("$ref %q resolves nowhere", r)}
				}
				cur = nx
			case []any:
				i, err := strconv.Atoi(tok)
				if err != nil || i < 0 || i >= len(v) {
					return nil, "", &SchemaError{Path: path, Msg: fmt.Sprintf("$ref %q resolves nowhere", r)}
				}
				cur = v[i]
			default:
				return nil, "", &SchemaError{Path: path, Msg: fmt.Sprintf("$ref %q resolves nowhere", r)}
			}
		}
	}
	return cur, r, nil
}

func (c *compiler) ref(ref any, path string, depth int) (frag, error) {
	target, r, err := c.resolve(ref, path)
	if err != nil {
		return frag{}, err
	}
	if c.refs[r] >= c.opts.Limits.RefRecursion {
		return c.n.none(), nil
	}
	c.refs[r]++
	defer func() { c.refs[r]-- }()
	return c.schema(target, r, depth+1)
}

// deref replaces a schema that is only a $ref (and annotations) by its
// target, so that it can be merged; a recursive one is left as it is.
func (c *compiler) deref(s any, path string) (any, error) {
	for i := 0; i < 8; i++ {
		o, ok := s.(*object)
		if !ok || !has(o, "$ref") || constraining(o, "$ref") != "" {
			return s, nil
		}
		t, _, err := c.resolve(o.m["$ref"], path)
		if err != nil {
			return nil, err
		}
		if _, ok := t.(*object); !ok {
			return t, nil
		}
		if tt := t.(*object); has(tt, "$ref") {
			s = tt
			continue
		}
		return t, nil
	}
	return s, nil
}

// mergeAll folds allOf's subschemas and s's other keywords into one schema.
func (c *compiler) mergeAll(s *object, all any, path string) (any, error) {
	subs, ok := all.([]any)
	if !ok || len(subs) == 0 {
		return nil, &SchemaError{Path: ptr(path, "allOf"), Msg: "must be a non-empty array"}
	}
	var m any = without(s, "allOf")
	for i, sub := range subs {
		p := ptr(ptr(path, "allOf"), strconv.Itoa(i))
		sub, err := c.deref(sub, p)
		if err != nil {
			return nil, err
		}
		if m, err = merge(m, sub, p); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// merge is the conjunction of two schemas where it can be written as one:
// keywords that only one has, equal values, type lists (intersected),
// required lists (joined) and properties (joined, a shared name's schemas
// merged). Anything else is refused.
func merge(a, b any, path string) (any, error) {
	if bb, ok := b.(bool); ok {
		if bb {
			return a, nil
		}
		return false, nil
	}
	if ab, ok := a.(bool); ok {
		if ab {
			return b, nil
		}
		return false, nil
	}
	x, ok1 := a.(*object)
	y, ok2 := b.(*object)
	if !ok1 || !ok2 {
		return nil, &SchemaError{Path: path, Msg: "a schema must be an object or a boolean"}
	}
	// additionalProperties speaks of the names its own schema lists, and
	// items of the positions after its own prefixItems: merged with another
	// schema's names or prefix they would mean something else.
	for _, p := range [][2]*object{{x, y}, {y, x}} {
		if ap, ok := p[0].get("additionalProperties"); ok && ap != true {
			mine, _ := p[0].m["properties"].(*object)
			if theirs, ok := p[1].m["properties"].(*object); ok {
				for _, name := range theirs.keys {
					if mine == nil || !has(mine, name) {
						return nil, &UnsupportedError{Keyword: "additionalProperties", Path: path, Reason: fmt.Sprintf("combined with a schema that lists %q", name)}
					}
				}
			}
		}
		if has(p[0], "items") && has(p[1], "prefixItems") && !has(p[0], "prefixItems") {
			return nil, &UnsupportedError{Keyword: "items", Path: path, Reason: "combined with a schema that has prefixItems"}
		}
	}
	out := without(x, "")
	for _, k := range y.keys {
		v := y.m[k]
		old, ok := out.m[k]
		if !ok {
			out.keys = append(out.keys, k)
			out.m[k] = v
			continue
		}
		if annotations[k] || string(appendJSON(nil, old)) == string(appendJSON(nil, v)) {
			continue
		}
		switch k {
		case "type":
			ta, err := typeList(x, path)
			if err != nil {
				return nil, err
			}
			tb, err := typeList(y, path)
			if err != nil {
				return nil, err
			}
			var both []any
			for _, t := range ta {
				for _, u := range tb {
					switch {
					case t == u:
						both = append(both, t)
					case t == "number" && u == "integer", t == "integer" && u == "number":
						both = append(both, "integer")
					}
				}
			}
			out.m[k] = both
		case "required":
			ra, _ := old.([]any)
			rb, _ := v.([]any)
			out.m[k] = append(append([]any{}, ra...), rb...)
		case "properties":
			pa, ok1 := old.(*object)
			pb, ok2 := v.(*object)
			if !ok1 || !ok2 {
				return nil, &SchemaError{Path: path, Msg: "properties must be an object"}
			}
			both := without(pa, "")
			for _, name := range pb.keys {
				if prev, dup := both.m[name]; dup {
					m, err := merge(prev, pb.m[name], ptr(ptr(path, "properties"), name))
					if err != nil {
						return nil, err
					}
					both.m[name] = m
					continue
				}
				both.keys = append(both.keys, name)
				both.m[name] = pb.m[name]
			}
			out.m[k] = both
		default:
			return nil, &UnsupportedError{Keyword: k, Path: path, Reason: "two different values to combine (allOf, or anyOf/oneOf beside other keywords)"}
		}
	}
	return out, nil
}
