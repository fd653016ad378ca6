package grammar

import (
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options configure a compile. The zero value is the default for every field.
type Options struct {
	// Whitespace is how many whitespace bytes (space, tab, newline, carriage
	// return) the output may have at each place JSON allows whitespace
	// between tokens. 0 (the default) is compact JSON: {"a":1,"b":[2,3]}.
	Whitespace int
	// AnyDepth is how deeply an unconstrained value ({}, true,
	// additionalProperties absent or true, items absent, json_object mode)
	// may nest arrays and objects, counting itself. Default 4 in a schema
	// (each such place adds about 1,100 automaton states), 6 in
	// CompileJSONObject (about 4,500).
	AnyDepth int
	// IntDigits and FracDigits cap the digits of a number's integer part and
	// fraction (defaults 16 and 16); integer bounds beyond the cap are
	// clipped to it.
	IntDigits, FracDigits int
	// Prefix and Suffix are literal text around the JSON value, for a
	// format that wraps it: a hermes tool call is Prefix "<tool_call>\n",
	// Suffix "\n</tool_call>" around {"name":...,"arguments":...}.
	Prefix, Suffix string
	Limits         Limits
}

// Limits bound what a schema may cost; a schema over one is refused with a
// *LimitError. A zero field takes its default.
type Limits struct {
	SchemaBytes int           // size of the schema document; default 256 KiB
	Depth       int           // nesting of the schema document and of subschemas (through $ref); default 32
	Enum        int           // values in one enum; default 1024
	NFAStates   int           // states of the intermediate automaton; default 400,000
	States      int           // states of the final automaton; default 100,000
	CompileTime time.Duration // default 1s
	// RefRecursion is how many times one $ref may be open inside itself;
	// beyond it the recursive branch is cut (an optional or alternative
	// branch is then not produced; a required one makes the schema
	// unsatisfiable, a *SchemaError). Default 3.
	RefRecursion int
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.Whitespace < 0 {
		o.Whitespace = 0
	}
	def(&o.AnyDepth, 4)
	def(&o.IntDigits, 16)
	def(&o.FracDigits, 16)
	l := &o.Limits
	def(&l.SchemaBytes, 256<<10)
	def(&l.Depth, 32)
	def(&l.Enum, 1024)
	def(&l.NFAStates, 400_000)
	def(&l.States, 100_000)
	def(&l.RefRecursion, 3)
	if l.CompileTime <= 0 {
		l.CompileTime = time.Second
	}
	return o
}

// Compile compiles a JSON Schema document into a Grammar that accepts
// exactly the compact-or-bounded-whitespace JSON texts described in the
// package documentation. Every error it returns matches ErrSchema.
func Compile(schema []byte, opts Options) (*Grammar, error) {
	opts = opts.withDefaults()
	if len(schema) > opts.Limits.SchemaBytes {
		return nil, &LimitError{Limit: "schema bytes", Max: int64(opts.Limits.SchemaBytes), Path: "#"}
	}
	root, err := parseJSON(schema, opts.Limits.Depth)
	if err == errDepth {
		return nil, &LimitError{Limit: "depth", Max: int64(opts.Limits.Depth), Path: "#"}
	}
	if err != nil {
		return nil, err
	}
	c := newCompiler(root, opts)
	f, err := c.schema(root, "#", 0)
	if err != nil {
		return nil, err
	}
	return c.finish(c.wrap(f))
}

// wrap puts Prefix and Suffix around the value.
func (c *compiler) wrap(f frag) frag {
	if c.opts.Prefix == "" && c.opts.Suffix == "" {
		return f
	}
	return c.n.seq(c.n.lit(c.opts.Prefix), f, c.n.lit(c.opts.Suffix))
}

// CompileJSONObject is json_object mode: any JSON object, nesting at most
// opts.AnyDepth arrays and objects.
func CompileJSONObject(opts Options) (*Grammar, error) {
	if opts.AnyDepth <= 0 {
		opts.AnyDepth = 6
	}
	opts = opts.withDefaults()
	c := newCompiler(nil, opts)
	return c.finish(c.wrap(c.anyObject(opts.AnyDepth)))
}

type compiler struct {
	n        *nfa
	opts     Options
	root     any
	deadline time.Time
	refs     map[string]int // $ref → how many times it is open
	cap      *big.Int       // largest integer part
	anyCache map[int]cached
}

func newCompiler(root any, opts Options) *compiler {
	cap := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(opts.IntDigits)), nil)
	cap.Sub(cap, big.NewInt(1))
	return &compiler{
		n:        &nfa{max: opts.Limits.NFAStates},
		opts:     opts,
		root:     root,
		deadline: time.Now().Add(opts.Limits.CompileTime),
		refs:     map[string]int{},
		cap:      cap,
		anyCache: map[int]cached{},
	}
}

func (c *compiler) finish(f frag) (*Grammar, error) {
	if c.n.full {
		return nil, &LimitError{Limit: "nfa states", Max: int64(c.opts.Limits.NFAStates)}
	}
	return determinize(c.n, f, c.opts.Limits.States, c.deadline, c.opts.Limits.CompileTime)
}

func (c *compiler) check(path string, depth int) error {
	if c.n.full {
		return &LimitError{Limit: "nfa states", Max: int64(c.opts.Limits.NFAStates), Path: path}
	}
	if depth > c.opts.Limits.Depth {
		return &LimitError{Limit: "depth", Max: int64(c.opts.Limits.Depth), Path: path}
	}
	if time.Now().After(c.deadline) {
		return &LimitError{Limit: "compile time", Max: int64(c.opts.Limits.CompileTime), Path: path}
	}
	return nil
}

// Keywords by what the compiler does with them.
var (
	annotations = set("title", "description", "default", "examples", "$schema", "$comment", "$id",
		"$anchor", "deprecated", "readOnly", "writeOnly", "$defs", "definitions")
	stringKeys = set("minLength", "maxLength", "format", "pattern")
	numberKeys = set("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
	objectKeys = set("properties", "required", "additionalProperties")
	arrayKeys  = set("items", "prefixItems", "minItems", "maxItems", "uniqueItems")
	otherKeys  = set("type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref")
	allTypes   = []string{"null", "boolean", "object", "array", "number", "string"}
)

func set(ks ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range ks {
		m[k] = true
	}
	return m
}

func known(k string) bool {
	return annotations[k] || stringKeys[k] || numberKeys[k] || objectKeys[k] || arrayKeys[k] || otherKeys[k]
}

func ptr(path, k string) string {
	return path + "/" + strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}

// schema compiles one subschema.
func (c *compiler) schema(s any, path string, depth int) (frag, error) {
	if err := c.check(path, depth); err != nil {
		return frag{}, err
	}
	switch s := s.(type) {
	case bool:
		if s {
			return c.anyValue(c.opts.AnyDepth), nil
		}
		return c.n.none(), nil
	case *object:
		return c.objectSchema(s, path, depth)
	}
	return frag{}, &SchemaError{Path: path, Msg: "a schema must be an object or a boolean"}
}

func (c *compiler) objectSchema(s *object, path string, depth int) (frag, error) {
	for _, k := range s.keys {
		if !known(k) {
			return frag{}, &UnsupportedError{Keyword: k, Path: path}
		}
	}
	if k := constraining(s, "$ref"); k != "" && has(s, "$ref") {
		return frag{}, &UnsupportedError{Keyword: k, Path: path, Reason: "alongside $ref"}
	}
	if ref, ok := s.get("$ref"); ok {
		return c.ref(ref, path, depth)
	}
	if all, ok := s.get("allOf"); ok {
		m, err := c.mergeAll(s, all, path)
		if err != nil {
			return frag{}, err
		}
		return c.schema(m, path, depth+1)
	}
	if has(s, "anyOf") && has(s, "oneOf") {
		return frag{}, &UnsupportedError{Keyword: "oneOf", Path: path, Reason: "alongside anyOf"}
	}
	for _, kw := range []string{"anyOf", "oneOf"} {
		v, ok := s.get(kw)
		if !ok {
			continue
		}
		subs, ok := v.([]any)
		if !ok || len(subs) == 0 {
			return frag{}, &SchemaError{Path: ptr(path, kw), Msg: "must be a non-empty array"}
		}
		rest := without(s, kw)
		var fs []frag
		for i, sub := range subs {
			p := ptr(ptr(path, kw), strconv.Itoa(i))
			sub, err := c.deref(sub, p)
			if err != nil {
				return frag{}, err
			}
			if constraining(rest, "") != "" {
				if sub, err = merge(rest, sub, p); err != nil {
					return frag{}, err
				}
			}
			f, err := c.schema(sub, p, depth+1)
			if err != nil {
				return frag{}, err
			}
			fs = append(fs, f)
		}
		return c.n.alt(fs...), nil
	}
	types, err := typeList(s, path)
	if err != nil {
		return frag{}, err
	}
	if has(s, "enum") || has(s, "const") {
		return c.literals(s, types, path)
	}
	var fs []frag
	for _, t := range types {
		var f frag
		var err error
		switch t {
		case "null":
			f = c.n.lit("null")
		case "boolean":
			f = c.n.alt(c.n.lit("true"), c.n.lit("false"))
		case "integer", "number":
			f, err = c.number(s, t == "integer", path)
		case "string":
			f, err = c.str(s, path)
		case "object":
			f, err = c.object(s, path, depth)
		case "array":
			f, err = c.array(s, path, depth)
		}
		if err != nil {
			return frag{}, err
		}
		fs = append(fs, f)
	}
	if len(fs) == 0 {
		return c.n.none(), nil
	}
	return c.n.alt(fs...), nil
}

func has(s *object, k string) bool { _, ok := s.m[k]; return ok }

// constraining is a keyword of s, other than the annotations and except,
// or "".
func constraining(s *object, except string) string {
	for _, k := range s.keys {
		if !annotations[k] && k != except {
			return k
		}
	}
	return ""
}

func without(s *object, k string) *object {
	o := &object{m: map[string]any{}}
	for _, kk := range s.keys {
		if kk != k {
			o.keys = append(o.keys, kk)
			o.m[kk] = s.m[kk]
		}
	}
	return o
}

// typeList is the schema's types: "type" (a name or a list), or all.
func typeList(s *object, path string) ([]string, error) {
	v, ok := s.get("type")
	if !ok {
		return allTypes, nil
	}
	var names []string
	switch v := v.(type) {
	case string:
		names = []string{v}
	case []any:
		for _, e := range v {
			n, ok := e.(string)
			if !ok {
				return nil, &SchemaError{Path: ptr(path, "type"), Msg: "type names must be strings"}
			}
			names = append(names, n)
		}
	default:
		return nil, &SchemaError{Path: ptr(path, "type"), Msg: "must be a string or an array"}
	}
	seen := map[string]bool{}
	for _, n := range names {
		switch n {
		case "null", "boolean", "object", "array", "number", "string", "integer":
		default:
			return nil, &SchemaError{Path: ptr(path, "type"), Msg: fmt.Sprintf("unknown type %q", n)}
		}
		seen[n] = true
	}
	var out []string
	for _, n := range []string{"null", "boolean", "object", "array", "number", "integer", "string"} {
		if seen[n] && !(n == "integer" && seen["number"]) {
			out = append(out, n)
		}
	}
	return out, nil
}

// literals is enum and const: each allowed value as its compact JSON text.
func (c *compiler) literals(s *object, types []string, path string) (frag, error) {
	for _, k := range s.keys {
		if !annotations[k] && k != "enum" && k != "const" && k != "type" {
			return frag{}, &UnsupportedError{Keyword: k, Path: path, Reason: "alongside enum or const"}
		}
	}
	var vals []any
	if e, ok := s.get("enum"); ok {
		arr, ok := e.([]any)
		if !ok {
			return frag{}, &SchemaError{Path: ptr(path, "enum"), Msg: "must be an array"}
		}
		if len(arr) > c.opts.Limits.Enum {
			return frag{}, &LimitError{Limit: "enum", Max: int64(c.opts.Limits.Enum), Path: ptr(path, "enum")}
		}
		vals = arr
	}
	if cv, ok := s.get("const"); ok {
		if vals == nil {
			vals = []any{cv}
		} else {
			want := string(appendJSON(nil, cv))
			var keep []any
			for _, v := range vals {
				if string(appendJSON(nil, v)) == want {
					keep = append(keep, v)
				}
			}
			vals = keep
		}
	}
	ok := map[string]bool{}
	for _, t := range types {
		ok[t] = true
	}
	var fs []frag
	seen := map[string]bool{}
	for _, v := range vals {
		t := jsonType(v)
		if !ok[t] && !(t == "integer" && ok["number"]) {
			continue
		}
		text := string(appendJSON(nil, v))
		if seen[text] {
			continue
		}
		seen[text] = true
		fs = append(fs, c.n.lit(text))
		if c.n.full {
			return frag{}, &LimitError{Limit: "nfa states", Max: int64(c.opts.Limits.NFAStates), Path: path}
		}
	}
	if len(fs) == 0 {
		return c.n.none(), nil
	}
	return c.n.alt(fs...), nil
}

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

// intValue reads a non-negative integer keyword.
func intValue(s *object, k, path string) (int, bool, error) {
	v, ok := s.get(k)
	if !ok {
		return 0, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, false, &SchemaError{Path: ptr(path, k), Msg: "must be a number"}
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		f, ferr := n.Float64()
		if ferr != nil || f != float64(int64(f)) {
			return 0, false, &SchemaError{Path: ptr(path, k), Msg: "must be a non-negative integer"}
		}
		i = int64(f)
	}
	if i < 0 {
		return 0, false, &SchemaError{Path: ptr(path, k), Msg: "must be a non-negative integer"}
	}
	if i > 1<<30 {
		i = 1 << 30
	}
	return int(i), true, nil
}

func (c *compiler) str(s *object, path string) (frag, error) {
	minL, _, err := intValue(s, "minLength", path)
	if err != nil {
		return frag{}, err
	}
	maxL, hasMax, err := intValue(s, "maxLength", path)
	if err != nil {
		return frag{}, err
	}
	if !hasMax {
		maxL = -1
	}
	fv, hasFormat := s.get("format")
	pv, hasPattern := s.get("pattern")
	if hasFormat || hasPattern {
		for _, k := range []string{"minLength", "maxLength"} {
			if has(s, k) {
				return frag{}, &UnsupportedError{Keyword: k, Path: path, Reason: "alongside format or pattern"}
			}
		}
		if hasFormat && hasPattern {
			return frag{}, &UnsupportedError{Keyword: "pattern", Path: path, Reason: "alongside format"}
		}
		var re, kw string
		if hasFormat {
			name, ok := fv.(string)
			if !ok {
				return frag{}, &SchemaError{Path: ptr(path, "format"), Msg: "must be a string"}
			}
			if re, ok = formats[name]; !ok {
				return frag{}, &UnsupportedError{Keyword: "format", Path: path, Reason: fmt.Sprintf("format %q (supported: %s)", name, strings.Join(FormatNames(), ", "))}
			}
			kw = "format"
		} else {
			p, ok := pv.(string)
			if !ok {
				return frag{}, &SchemaError{Path: ptr(path, "pattern"), Msg: "must be a string"}
			}
			re, kw = p, "pattern"
		}
		f, err := c.regexpFrag(re, kw, path)
		if err != nil {
			return frag{}, err
		}
		return c.n.seq(c.n.lit(`"`), f, c.n.lit(`"`)), nil
	}
	if hasMax && maxL < minL {
		return c.n.none(), nil
	}
	if int64(max(minL, maxL))*14 > int64(c.opts.Limits.NFAStates) {
		return frag{}, &LimitError{Limit: "nfa states", Max: int64(c.opts.Limits.NFAStates), Path: path}
	}
	return c.n.stringLen(minL, maxL), nil
}

// formats are the enforced string formats, as regular expressions over
// the string's text. Each is a subset of what the format allows (dates
// with days by month, February to the 28th; email without quoted local
// parts or IP literals; uri: http and https URLs with a host name).
var formats = map[string]string{
	"date":      `^` + dateRE + `$`,
	"time":      `^` + timeRE + `$`,
	"date-time": `^` + dateRE + `T` + timeRE + `$`,
	"uuid":      `^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`,
	"email":     `^[A-Za-z0-9_+-]{1,30}(?:\.[A-Za-z0-9_+-]{1,15}){0,2}@` + label + `(?:\.` + label + `){1,3}$`,
	"hostname":  `^` + label + `(?:\.` + label + `){0,3}$`,
	"uri":       `^https?://` + label + `(?:\.` + label + `){0,3}(?::[0-9]{1,5})?(?:/` + uriChars + `)*(?:\?` + uriChars + `)?(?:#` + uriChars + `)?$`,
	"ipv4":      `^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$`,
}

const (
	dateRE = `[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))`
	timeRE = `(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])`
	label  = `[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?`
	// uriChars is a path, query or fragment without "/" ... "#" structure
	// of its own: unreserved and sub-delimiter characters, ":", "@" and
	// percent escapes.
	uriChars = `(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*`
)

// FormatNames lists the string formats Compile enforces.
func FormatNames() []string {
	var ns []string
	for k := range formats {
		ns = append(ns, k)
	}
	sort.Strings(ns)
	return ns
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
