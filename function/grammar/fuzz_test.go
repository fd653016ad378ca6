package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// byteWalk generates text byte by byte under g, ending where it may with
// probability 1/4; it reports whether the text is complete.
func byteWalk(g *Grammar, r *rand.Rand, maxBytes int) ([]byte, bool) {
	var text []byte
	s := g.start
	for len(text) < maxBytes {
		if g.accepts(s) && (g.isFinal(s) || r.IntN(4) == 0) {
			return text, true
		}
		var next []byte
		for b := 0; b < 256; b++ {
			if g.step(s, byte(b)) != 0 {
				next = append(next, byte(b))
			}
		}
		if len(next) == 0 {
			panic("grammar: a live non-final state with no way on")
		}
		b := next[r.IntN(len(next))]
		text = append(text, b)
		s = g.step(s, b)
	}
	return text, false
}

// independent compiles schema with the independent validator, or nil where
// its semantics and Compile's documented ones differ (oneOf is compiled as
// anyOf; $id and $anchor move where a $ref points) or it refuses it.
func independent(schema []byte) *jsonschema.Schema {
	for _, k := range []string{`"oneOf"`, `"$id"`, `"$anchor"`, `"$schema"`, `"$dynamicAnchor"`} {
		if bytes.Contains(schema, []byte(k)) {
			return nil
		}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if c.AddResource("schema.json", doc) != nil {
		return nil
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		return nil
	}
	return s
}

var fuzzLimits = Limits{NFAStates: 50_000, States: 20_000, CompileTime: 10 * time.Second}

func FuzzCompile(f *testing.F) {
	for _, s := range bounded {
		f.Add([]byte(s))
	}
	for _, s := range []string{largeSchema(8), `{}`, `true`, `false`, `{"type":"object"}`, `{"allOf":[{"type":"string"},{"maxLength":3}]}`,
		`{"anyOf":[{"$ref":"#"},{"type":"null"}]}`, `{"type":"string","pattern":"^(a|b)*c{2,3}$"}`, `{"type":"number","exclusiveMaximum":-1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		g, err := Compile(data, Options{Limits: fuzzLimits})
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("compile took %v: %q", d, data)
		}
		if err != nil {
			if !errors.Is(err, ErrSchema) {
				t.Fatalf("error %v is not ErrSchema", err)
			}
			return
		}
		val := independent(data)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("validator compile took %v: %q", d, data)
		}
		r := rand.New(rand.NewPCG(uint64(len(data)), 1))
		for k := 0; k < 4; k++ {
			text, ok := byteWalk(g, r, 300)
			if !ok {
				continue
			}
			if !json.Valid(text) {
				t.Fatalf("schema %s: %q is not JSON", data, text)
			}
			if val != nil {
				if err := validate(val, text); err != nil {
					t.Fatalf("schema %s: %q does not validate: %v", data, text, err)
				}
			}
		}
		// Masks over a vocabulary of multi-byte tokens agree with Allowed.
		if _, _, err := walkErr(NewConstraint(g, fuzzSynth(), 0), fuzzSynth(), r, 30, true); err != nil {
			t.Fatalf("schema %s: %v", data, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("walks took %v: %q", d, data)
		}
	})
}

var fuzzSynth = sync.OnceValue(func() *Vocab { return synthVocab(1) })

var (
	fuzzOnce     sync.Once
	fuzzGrammars []*Grammar
	fuzzVals     []*jsonschema.Schema
)

func FuzzMatch(f *testing.F) {
	fuzzOnce.Do(func() {
		for _, s := range bounded {
			g, err := Compile([]byte(s), testOpts(Options{Whitespace: 1}))
			if err != nil {
				panic(err)
			}
			fuzzGrammars = append(fuzzGrammars, g)
			fuzzVals = append(fuzzVals, independent([]byte(s)))
		}
	})
	f.Add(uint8(0), []byte(`{"name":"Ada","age":36}`))
	f.Add(uint8(4), []byte(`{"tags":["a"],"nested":{"deep":{"v":100}}}`))
	f.Add(uint8(8), []byte(`{"when":"2024-01-31T23:59:59Z","day":"2024-01-31"`))
	f.Add(uint8(12), []byte("\"\xc3\xa9\xed\xa0\x80\""))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		i := int(which) % len(fuzzGrammars)
		g := fuzzGrammars[i]
		v, err := NewVocab(byteTokens(), []int{256})
		if err != nil {
			t.Fatal(err)
		}
		m := NewConstraint(g, v, 0).NewMatcher()
		n := 0
		for ; n < len(data); n++ {
			if m.Allowed(int(data[n])) != (g.step(m.state, data[n]) != 0) {
				t.Fatalf("Allowed and the automaton disagree after %q", data[:n])
			}
			if m.Accept(int(data[n])) != nil {
				break
			}
		}
		ok, complete := g.Match(data)
		if ok != (n == len(data)) {
			t.Fatalf("Match %v, matcher accepted %d of %d bytes", ok, n, len(data))
		}
		if complete != m.CanEnd() && ok {
			t.Fatalf("Match complete %v, CanEnd %v", complete, m.CanEnd())
		}
		if ok && complete {
			if !json.Valid(data) {
				t.Fatalf("schema %d: %q accepted, not JSON", i, data)
			}
			if val := fuzzVals[i]; val != nil {
				if err := validate(val, data); err != nil {
					t.Fatalf("schema %d: %q accepted, does not validate: %v", i, data, err)
				}
			}
		}
	})
}

func byteTokens() [][]byte {
	toks := make([][]byte, 257)
	for b := 0; b < 256; b++ {
		toks[b] = []byte{byte(b)}
	}
	return toks
}
