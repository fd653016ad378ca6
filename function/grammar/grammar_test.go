package grammar

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// bounded are schemas whose every output is bounded in length.
var bounded = []string{
	`{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":150}},"required":["name","age"],"additionalProperties":false}`,
	`{"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"},"c":{"enum":["x","y",3,null,{"k":[1,2]}]}},"required":["a"],"additionalProperties":false}`,
	`{"type":"array","items":{"type":"integer","minimum":-40,"exclusiveMaximum":1234},"minItems":1,"maxItems":5}`,
	`{"type":"array","prefixItems":[{"const":"head"},{"type":"number","minimum":-3,"maximum":7}],"items":false}`,
	`{"type":"object","properties":{"tags":{"type":"array","items":{"type":"string","minLength":1,"maxLength":6},"maxItems":3},"nested":{"type":"object","properties":{"deep":{"type":"object","properties":{"v":{"type":"integer","minimum":100,"maximum":99999}},"required":["v"],"additionalProperties":false}},"required":["deep"],"additionalProperties":false}},"required":["tags","nested"],"additionalProperties":false}`,
	`{"anyOf":[{"type":"string","maxLength":5},{"type":"null"}]}`,
	`{"type":"object","properties":{"x":{"anyOf":[{"type":"integer","minimum":1,"maximum":9},{"type":"null"}]},"y":{"$ref":"#/$defs/point"}},"required":["x","y"],"additionalProperties":false,"$defs":{"point":{"type":"object","properties":{"lat":{"type":"number","minimum":-90,"maximum":90},"lon":{"type":"number","exclusiveMinimum":-180,"maximum":180}},"required":["lat","lon"],"additionalProperties":false}}}`,
	`{"oneOf":[{"type":"boolean"},{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"integer","minimum":0,"maximum":10}},"required":["kind","r"],"additionalProperties":false}]}`,
	`{"type":"object","properties":{"when":{"type":"string","format":"date-time"},"day":{"type":"string","format":"date"},"id":{"type":"string","format":"uuid"},"mail":{"type":"string","format":"email"},"ip":{"type":"string","format":"ipv4"}},"required":["when","day","id","mail","ip"],"additionalProperties":false}`,
	`{"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{2}-[0-9]{3,4}$"}},"required":["code"],"additionalProperties":false}`,
	`{"type":"object","properties":{"opt1":{"type":"integer","minimum":0,"maximum":3},"opt2":{"type":"boolean"},"req":{"type":"string","maxLength":3}},"required":["req"],"additionalProperties":false}`,
	`{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer","minimum":0,"maximum":9},"kids":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["v"],"additionalProperties":false}},"$ref":"#/$defs/node"}`,
	`{"type":["string","integer","null"],"maxLength":4,"minimum":-5,"maximum":5}`,
	`{"type":"string","minLength":2,"maxLength":8}`,
}

// unbounded are schemas with loops (additional properties, a URI): a walk
// may not end, and then its text is not checked.
var unbounded = []string{
	`{"type":"object","properties":{"k":{"type":"integer","minimum":-2,"maximum":2}},"required":["k"],"additionalProperties":{"type":"boolean"}}`,
	`{"type":"object","properties":{"home":{"type":"string","format":"uri"},"host":{"type":"string","format":"hostname"},"t":{"type":"string","format":"time"}},"required":["home","host","t"],"additionalProperties":false}`,
}

func TestGenerateValidates(t *testing.T) {
	v := synthVocab(1)
	for i, schema := range append(bounded[:len(bounded):len(bounded)], unbounded...) {
		g, err := Compile([]byte(schema), testOpts(Options{}))
		if err != nil {
			t.Fatalf("schema %d: %v", i, err)
		}
		val := validator(t, schema)
		c := NewConstraint(g, v, 0)
		r := rand.New(rand.NewPCG(uint64(i), 2))
		for k := 0; k < 30; k++ {
			text, ended := walk(t, c, v, r, 400, k < 3)
			if !ended {
				if i >= len(bounded) {
					continue
				}
				t.Fatalf("schema %d: did not end within 400 tokens: %q", i, text)
			}
			if k == 0 {
				t.Logf("schema %d: %s", i, text)
			}
			if !json.Valid(text) {
				t.Fatalf("schema %d: not JSON: %q", i, text)
			}
			if err := validate(val, text); err != nil {
				t.Fatalf("schema %d: %q does not validate: %v", i, text, err)
			}
		}
	}
}

func TestGenerateValidatesQwen3(t *testing.T) {
	v := qwenVocab(t)
	if got, want := v.Size(), 151669; got != want {
		t.Fatalf("Qwen3 vocabulary: %d ids, want %d", got, want)
	}
	n := 6
	if testing.Short() {
		n = 2
	}
	for i, schema := range bounded {
		g, err := Compile([]byte(schema), testOpts(Options{}))
		if err != nil {
			t.Fatalf("schema %d: %v", i, err)
		}
		val := validator(t, schema)
		c := NewConstraint(g, v, 0)
		r := rand.New(rand.NewPCG(uint64(i), 3))
		for k := 0; k < n; k++ {
			// Every 5th schema's first walk compares the mask with Allowed
			// for all 151,669 tokens at each step.
			text, ended := walk(t, c, v, r, 400, k == 0 && i%5 == 0)
			if !ended {
				t.Fatalf("schema %d: did not end within 400 tokens: %q", i, text)
			}
			if k == 0 {
				t.Logf("schema %d: %s", i, text)
			}
			if err := validate(val, text); err != nil {
				t.Fatalf("schema %d: %q does not validate: %v", i, text, err)
			}
		}
	}
	// Added tokens that are text are allowed where their bytes are; special
	// ones never.
	g, err := Compile([]byte(`{"type":"string"}`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewConstraint(g, v, 0).NewMatcher()
	if err := m.AcceptBytes([]byte(`"`)); err != nil {
		t.Fatal(err)
	}
	// Masks, which take whole subtrees of text at once, agree with Allowed
	// token by token: in an unbounded string, inside a character split
	// across tokens, and near a maxLength.
	mask := make([]uint64, v.MaskWords())
	checkMask := func(m *Matcher, where string) {
		t.Helper()
		m.FillMask(mask)
		for id := 0; id < v.Size(); id++ {
			if got, want := mask[id>>6]>>(id&63)&1 == 1, m.Allowed(id); got != want {
				t.Fatalf("%s: token %d %q: mask %v, Allowed %v", where, id, v.tokens[id], got, want)
			}
		}
	}
	checkMask(m, "in a string")
	split := m.Clone()
	if err := split.AcceptBytes([]byte("中\xe6\x96")); err != nil {
		t.Fatal(err)
	}
	checkMask(split, "inside a character")
	short := mustCompile(t, `{"type":"string","maxLength":4}`, Options{})
	ms := NewConstraint(short, v, 0).NewMatcher()
	for _, p := range []string{`"`, `é`, `日本`} {
		if err := ms.AcceptBytes([]byte(p)); err != nil {
			t.Fatal(err)
		}
		checkMask(ms, "after "+p)
	}
	q := qwenTokens(t)
	for id, want := range map[int]bool{151657: true, 151667: true, 151644: false, 151645: false} {
		if got := m.Allowed(id); got != want {
			t.Errorf("in a string: token %d %q allowed %v, want %v", id, q.tokens[id], got, want)
		}
	}
	if err := m.AcceptBytes([]byte(`x"`)); err != nil || !m.Allowed(151645) || !m.Allowed(151643) {
		t.Errorf("after a complete string: EOS not allowed (%v)", err)
	}

	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 5*n; i++ {
		schema := `{"$defs":{"small":{"const":"s"}},"allOf":[` + randomSchema(r, 3) + `]}`
		g, err := Compile([]byte(schema), testOpts(Options{}))
		if err != nil {
			t.Fatalf("%s: %v", schema, err)
		}
		limit, ok := g.MaxLen()
		if !ok {
			t.Fatalf("%s: unbounded", schema)
		}
		text, ended := walk(t, NewConstraint(g, v, 0), v, r, limit+1, false)
		if !ended {
			t.Fatalf("%s: did not end within %d tokens: %q", schema, limit+1, text)
		}
		if err := validate(validator(t, schema), text); err != nil {
			t.Fatalf("%s: %q does not validate: %v", schema, text, err)
		}
	}
}

// Sampling with EOS allowed only where the value is complete always ends,
// within the grammar's longest text, for bounded schemas.
func TestWalkTerminates(t *testing.T) {
	v := synthVocab(7)
	for i, schema := range bounded {
		g, err := Compile([]byte(schema), testOpts(Options{Whitespace: 1}))
		if err != nil {
			t.Fatal(err)
		}
		limit, ok := g.MaxLen()
		if !ok {
			t.Fatalf("schema %d is not bounded", i)
		}
		c := NewConstraint(g, v, 0)
		r := rand.New(rand.NewPCG(uint64(i), 5))
		for k := 0; k < 50; k++ {
			text, ended := walk(t, c, v, r, limit+1, false)
			if !ended || len(text) > limit {
				t.Fatalf("schema %d: %d bytes, ended %v, bound %d", i, len(text), ended, limit)
			}
		}
	}
	for _, s := range append(unbounded, `{"type":"string"}`) {
		if n, ok := mustCompile(t, s, Options{}).MaxLen(); ok {
			t.Errorf("%s: MaxLen %d, want none", s, n)
		}
	}
	g := mustCompile(t, `{"enum":["ab","abcd"]}`, Options{})
	if n, ok := g.MaxLen(); !ok || n != 6 {
		t.Errorf("enum MaxLen %d %v, want 6", n, ok)
	}
}

// Matchers of one Constraint run concurrently (the mask cache is shared).
func TestConcurrentMatchers(t *testing.T) {
	v := synthVocab(3)
	g := mustCompile(t, bounded[4], Options{})
	c := NewConstraint(g, v, 0)
	val := validator(t, bounded[4])
	done := make(chan error)
	for w := 0; w < 4; w++ {
		go func(w int) {
			r := rand.New(rand.NewPCG(uint64(w), 6))
			for k := 0; k < 10; k++ {
				text, _, err := walkErr(c, v, r, 1000, false)
				if err == nil {
					err = validate(val, text)
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}(w)
	}
	for w := 0; w < 4; w++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// randomSchema is a random bounded schema: nested objects, arrays with
// maxItems, strings with maxLength, enums, integer ranges, numbers with
// bounds, anyOf with null, const and $ref to $defs.
func randomSchema(r *rand.Rand, depth int) string {
	k := r.IntN(10)
	if depth <= 0 && k >= 6 {
		k = r.IntN(6)
	}
	switch k {
	case 0:
		return fmt.Sprintf(`{"type":"string","minLength":%d,"maxLength":%d}`, r.IntN(3), 3+r.IntN(6))
	case 1:
		lo := r.IntN(2000) - 1000
		return fmt.Sprintf(`{"type":"integer","minimum":%d,"maximum":%d}`, lo, lo+r.IntN(5000))
	case 2:
		lo := r.IntN(20) - 10
		return fmt.Sprintf(`{"type":"number","exclusiveMinimum":%d,"maximum":%d}`, lo, lo+1+r.IntN(20))
	case 3:
		return []string{`{"enum":["a","b c","é",1,null,true]}`, `{"const":{"k":[1,"x"]}}`, `{"type":"boolean"}`, `{"type":"null"}`}[r.IntN(4)]
	case 4:
		return `{"$ref":"#/$defs/small"}`
	case 5:
		return []string{`{"type":"string","format":"date"}`, `{"type":"string","format":"uuid"}`, `{"type":"string","pattern":"^[a-f]{1,4}$"}`, `{"type":"string","format":"time"}`, `{"type":"string","format":"email"}`, `{"type":"string","format":"ipv4"}`}[r.IntN(6)]
	case 6, 7:
		n := 1 + r.IntN(4)
		var props, req []string
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("p%d", i)
			props = append(props, fmt.Sprintf("%q:%s", name, randomSchema(r, depth-1)))
			if r.IntN(2) == 0 {
				req = append(req, fmt.Sprintf("%q", name))
			}
		}
		return fmt.Sprintf(`{"type":"object","properties":{%s},"required":[%s],"additionalProperties":false}`, strings.Join(props, ","), strings.Join(req, ","))
	case 8:
		return fmt.Sprintf(`{"type":"array","items":%s,"minItems":%d,"maxItems":%d}`, randomSchema(r, depth-1), r.IntN(2), 2+r.IntN(3))
	default:
		return fmt.Sprintf(`{"anyOf":[%s,{"type":"null"}]}`, randomSchema(r, depth-1))
	}
}

func TestRandomSchemas(t *testing.T) {
	v := synthVocab(11)
	n := 150
	if testing.Short() {
		n = 30
	}
	r := rand.New(rand.NewPCG(42, 42))
	for i := 0; i < n; i++ {
		body := randomSchema(r, 3)
		schema := `{"$defs":{"small":{"type":"object","properties":{"v":{"type":"integer","minimum":-9,"maximum":9}},"required":["v"],"additionalProperties":false}},"allOf":[` + body + `]}`
		g, err := Compile([]byte(schema), testOpts(Options{Whitespace: r.IntN(2)}))
		if err != nil {
			t.Fatalf("%s: %v", schema, err)
		}
		limit, ok := g.MaxLen()
		if !ok {
			t.Fatalf("%s: unbounded", schema)
		}
		val := validator(t, schema)
		c := NewConstraint(g, v, 0)
		for k := 0; k < 5; k++ {
			text, ended := walk(t, c, v, r, limit+1, k == 0 && i%10 == 0)
			if !ended {
				t.Fatalf("%s: did not end within %d tokens: %q", schema, limit+1, text)
			}
			if err := validate(val, text); err != nil {
				t.Fatalf("%s: %q does not validate: %v", schema, text, err)
			}
		}
	}
}
