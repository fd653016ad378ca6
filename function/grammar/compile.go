package grammar

import (
	"encoding/json"
	"fmt"
	"math/big"
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
