package grammar

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// largeSchema is a tool-call-like schema of n properties of every kind,
// nested objects, arrays of objects and a 200-value enum.
func largeSchema(n int) string {
	var props []string
	var req []string
	for i := 0; i < n; i++ {
		var p string
		switch i % 8 {
		case 0:
			p = `{"type":"string","maxLength":64}`
		case 1:
			p = `{"type":"integer","minimum":-1000,"maximum":100000}`
		case 2:
			p = `{"type":"number","minimum":0,"maximum":1}`
		case 3:
			var vs []string
			for k := 0; k < 200; k++ {
				vs = append(vs, fmt.Sprintf(`"value_%d"`, k))
			}
			p = `{"enum":[` + strings.Join(vs, ",") + `]}`
		case 4:
			p = `{"type":"array","items":{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"n":{"type":"integer","minimum":0,"maximum":99}},"required":["id","n"],"additionalProperties":false},"maxItems":8}`
		case 5:
			p = `{"anyOf":[{"type":"string","format":"date-time"},{"type":"null"}]}`
		case 6:
			p = `{"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"object","properties":{"c":{"type":"string","maxLength":16}},"required":["c"],"additionalProperties":false}},"required":["a","b"],"additionalProperties":false}`
		case 7:
			p = `{"type":"string","pattern":"^[a-z]+(-[a-z]+)*$"}`
		}
		name := fmt.Sprintf("field_%d", i)
		props = append(props, fmt.Sprintf("%q:%s", name, p))
		if i%3 != 2 {
			req = append(req, fmt.Sprintf("%q", name))
		}
	}
	return `{"type":"object","properties":{` + strings.Join(props, ",") + `},"required":[` + strings.Join(req, ",") + `],"additionalProperties":false}`
}

func TestCompileLargeSchema(t *testing.T) {
	s := largeSchema(64)
	start := time.Now()
	// The race detector and shared CPUs slow compiles; the default
	// limit is for production.
	g, err := Compile([]byte(s), Options{Limits: Limits{CompileTime: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d-byte schema: %d states, %d byte classes, compiled in %v", len(s), g.States(), g.nclass, time.Since(start))
	start = time.Now()
	g, err = CompileJSONObject(testOpts(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("json_object: %d states, compiled in %v", g.States(), time.Since(start))
}

func BenchmarkCompileLarge(b *testing.B) {
	s := []byte(largeSchema(64))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(s, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// nestedSchema is what the mask benchmark walks through.
const nestedSchema = `{"type":"object","properties":{
 "name":{"type":"string","maxLength":40},
 "age":{"type":"integer","minimum":0,"maximum":150},
 "email":{"type":"string","format":"email"},
 "address":{"type":"object","properties":{"street":{"type":"string","maxLength":60},"city":{"type":"string","maxLength":30},"zip":{"type":"string","pattern":"^[0-9]{5}$"}},"required":["street","city","zip"],"additionalProperties":false},
 "tags":{"type":"array","items":{"enum":["red","green","blue","yellow"]},"maxItems":4},
 "scores":{"type":"array","items":{"type":"number","minimum":0,"maximum":100},"maxItems":5},
 "active":{"type":"boolean"},
 "note":{"anyOf":[{"type":"string","maxLength":80},{"type":"null"}]}
},"required":["name","age","email","address","tags","scores","active","note"],"additionalProperties":false}`

// BenchmarkMaskWalk walks sampled outputs of nestedSchema at the Qwen3
// vocabulary and reports the mask time per step, cold (a fresh Constraint
// per walk: each state's mask computed on first use) and warm (one
// Constraint, able to cache every state, after 200 untimed walks: the
// steady state of a schema in use).
func BenchmarkMaskWalk(b *testing.B) {
	v := qwenVocab(b)
	g, err := Compile([]byte(nestedSchema), Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, warm := range []bool{false, true} {
		name := "cold"
		if warm {
			name = "warm"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			mask := make([]uint64, v.MaskWords())
			var steps []time.Duration
			shared := NewConstraint(g, v, g.States())
			seed := uint64(0)
			if warm {
				for ; seed < 200; seed++ {
					walkErr(shared, v, rand.New(rand.NewPCG(seed+1000, 9)), 300, false)
				}
			}
			for b.Loop() {
				c := shared
				if !warm {
					c = NewConstraint(g, v, 0)
				}
				seed++
				r := rand.New(rand.NewPCG(seed, 9))
				m := c.NewMatcher()
				for i := 0; i < 300 && !m.Done(); i++ {
					t0 := time.Now()
					m.FillMask(mask)
					steps = append(steps, time.Since(t0))
					id := sample(r, mask)
					if err := m.Accept(id); err != nil {
						b.Fatal(err)
					}
				}
			}
			slices.Sort(steps)
			p := func(q float64) float64 { return float64(steps[int(q*float64(len(steps)-1))].Nanoseconds()) / 1e3 }
			b.ReportMetric(p(0.5), "p50_µs/step")
			b.ReportMetric(p(0.99), "p99_µs/step")
			b.ReportMetric(float64(len(steps))/float64(b.N), "steps/walk")
		})
	}
}

// benchMatcher is a matcher inside a string value of nestedSchema, where
// most of the vocabulary is allowed.
func benchMatcher(b *testing.B) (*Constraint, *Matcher, *Vocab) {
	v := qwenVocab(b)
	g, err := Compile([]byte(nestedSchema), Options{})
	if err != nil {
		b.Fatal(err)
	}
	c := NewConstraint(g, v, 0)
	m := c.NewMatcher()
	if err := m.AcceptBytes([]byte(`{"name":"Ada`)); err != nil {
		b.Fatal(err)
	}
	return c, m, v
}

// BenchmarkFillMask is one step's mask: cached, and computed (the trie
// walk, as on a state's first use).
func BenchmarkFillMask(b *testing.B) {
	b.Run("cached", func(b *testing.B) {
		_, m, v := benchMatcher(b)
		mask := make([]uint64, v.MaskWords())
		m.FillMask(mask)
		b.ReportAllocs()
		for b.Loop() {
			m.FillMask(mask)
		}
	})
	b.Run("computed", func(b *testing.B) {
		c, m, v := benchMatcher(b)
		mask := make([]uint64, v.MaskWords())
		b.ReportAllocs()
		for b.Loop() {
			c.compute(m.state, mask)
		}
		b.ReportMetric(float64(countMask(mask)), "allowed")
	})
}

// BenchmarkAllowed is the sample-first fast path: one token checked.
func BenchmarkAllowed(b *testing.B) {
	_, m, v := benchMatcher(b)
	ids := []int{}
	for id := 0; id < v.Size() && len(ids) < 1024; id += 149 {
		ids = append(ids, id)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Allowed(ids[i%len(ids)])
		i++
	}
}

func BenchmarkMaskLogits(b *testing.B) {
	_, m, v := benchMatcher(b)
	mask := make([]uint64, v.MaskWords())
	m.FillMask(mask)
	logits := make([]float32, 151936) // Qwen3's padded output
	b.ReportAllocs()
	for b.Loop() {
		MaskLogits(logits, mask)
	}
}

// BenchmarkNewVocab is the once-per-tokenizer trie build at Qwen3's size.
func BenchmarkNewVocab(b *testing.B) {
	q := qwenTokens(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewVocab(q.tokens, q.eos); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewConstraint is the once-per-(schema, vocabulary) binding.
func BenchmarkNewConstraint(b *testing.B) {
	v := qwenVocab(b)
	g, err := Compile([]byte(nestedSchema), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		NewConstraint(g, v, 0)
	}
}

// BenchmarkFillMaskEmail is a computed mask where no subtree can be taken
// whole: inside an email's local part.
func BenchmarkFillMaskEmail(b *testing.B) {
	c, m, v := benchMatcher(b)
	if err := m.AcceptBytes([]byte(`","age":36,"email":"a`)); err != nil {
		b.Fatal(err)
	}
	mask := make([]uint64, v.MaskWords())
	b.ReportAllocs()
	for b.Loop() {
		c.compute(m.state, mask)
	}
	b.ReportMetric(float64(countMask(mask)), "allowed")
}
