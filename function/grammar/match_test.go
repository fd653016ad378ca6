package grammar

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"testing"
	"time"
)

// testOpts lifts the default compile-time limit, which is for production:
// the race detector on shared CPUs is slower than any server.
func testOpts(o Options) Options {
	if o.Limits.CompileTime == 0 {
		o.Limits.CompileTime = time.Minute
	}
	return o
}

func mustCompile(t *testing.T, schema string, opts Options) *Grammar {
	t.Helper()
	g, err := Compile([]byte(schema), testOpts(opts))
	if err != nil {
		t.Fatalf("Compile(%s): %v", schema, err)
	}
	return g
}

func complete(g *Grammar, s string) bool {
	_, c := g.Match([]byte(s))
	return c
}

func TestIntegerRanges(t *testing.T) {
	for _, tc := range []struct {
		kw     string
		lo, hi int
	}{
		{`"minimum":0,"maximum":150`, 0, 150},
		{`"minimum":-40,"exclusiveMaximum":1234`, -40, 1233},
		{`"exclusiveMinimum":-1000,"maximum":-7`, -999, -7},
		{`"minimum":7,"maximum":7`, 7, 7},
		{`"minimum":-5.5,"maximum":99.9`, -5, 99},
		{`"minimum":10,"maximum":1000,"exclusiveMinimum":99`, 100, 1000},
		{`"minimum":3`, 3, 1 << 30},
		{`"maximum":-3`, -1 << 30, -3},
	} {
		g := mustCompile(t, `{"type":"integer",`+tc.kw+`}`, Options{})
		for x := -1500; x <= 1500; x++ {
			want := x >= tc.lo && x <= tc.hi
			if got := complete(g, strconv.Itoa(x)); got != want {
				t.Fatalf("%s: %d: %v, want %v", tc.kw, x, got, want)
			}
		}
		for _, bad := range []string{"-0", "01", "+1", "1.0", "1e2", "", "-"} {
			if complete(g, bad) {
				t.Errorf("%s: %q accepted", tc.kw, bad)
			}
		}
	}
	g := mustCompile(t, `{"type":"integer"}`, Options{IntDigits: 3})
	for s, want := range map[string]bool{"999": true, "-999": true, "1000": false, "0": true} {
		if got := complete(g, s); got != want {
			t.Errorf("3 digits: %q: %v, want %v", s, got, want)
		}
	}
}

func TestNumberRanges(t *testing.T) {
	var cands []string
	for _, i := range []string{"0", "1", "2", "3", "6", "7", "8", "10", "179", "180", "181"} {
		for _, f := range []string{"", ".0", ".00", ".5", ".05", ".000001", ".999"} {
			cands = append(cands, i+f, "-"+i+f)
		}
	}
	for _, kw := range []string{
		`"minimum":-3,"maximum":7`, `"exclusiveMinimum":0`, `"exclusiveMaximum":0`, `"minimum":0,"maximum":0`,
		`"exclusiveMinimum":-180,"maximum":180`, `"minimum":1,"exclusiveMaximum":2`, `"exclusiveMinimum":2,"exclusiveMaximum":3`,
		`"maximum":-2`, `"minimum":-1,"maximum":-1`,
	} {
		g := mustCompile(t, `{"type":"number",`+kw+`}`, Options{})
		lo, hi, loEx, hiEx, _ := bounds(mustObject(t, `{`+kw+`}`), "#")
		for _, s := range cands {
			x, _ := new(big.Rat).SetString(s)
			want := s != "-0" && (lo == nil || x.Cmp(lo) > 0 || (!loEx && x.Cmp(lo) == 0)) &&
				(hi == nil || x.Cmp(hi) < 0 || (!hiEx && x.Cmp(hi) == 0))
			if got := complete(g, s); got != want && !(x.Sign() == 0 && s[0] == '-') {
				t.Errorf("%s: %q: %v, want %v", kw, s, got, want)
			}
		}
	}
	g := mustCompile(t, `{"type":"number"}`, Options{})
	for s, want := range map[string]bool{"0": true, "-1.5e10": true, "3E+2": true, "1.": false, ".5": false, "01": false, "1e": false, "1e123": false} {
		if got := complete(g, s); got != want {
			t.Errorf("number: %q: %v, want %v", s, got, want)
		}
	}
}

func mustObject(t *testing.T, s string) *object {
	v, err := parseJSON([]byte(s), 10)
	if err != nil {
		t.Fatal(err)
	}
	return v.(*object)
}

func TestStrings(t *testing.T) {
	g := mustCompile(t, `{"type":"string","minLength":2,"maxLength":3}`, Options{})
	for s, want := range map[string]bool{
		`"ab"`: true, `"abc"`: true, `"a"`: false, `"abcd"`: false, `"é日"`: true, `"😀😀😀"`: true,
		`"\n\u00e9"`: true, `"\"\\"`: true, `"\ud83d\ude00"`: false, `"\x"`: false, "\"a\tb\"": false,
		"\"a\xffb\"": false, "\"\xc0\x80b\"": false, "\"\xed\xa0\x80b\"": false, "\"\xf5\x80\x80\x80b\"": false,
	} {
		if got := complete(g, s); got != want {
			t.Errorf("%q: %v, want %v", s, got, want)
		}
	}
}

func TestFormatsAndPatterns(t *testing.T) {
	for _, tc := range []struct {
		schema string
		ok     []string
		bad    []string
	}{
		{`{"type":"string","format":"date"}`, []string{`"2024-01-31"`, `"1999-04-30"`, `"2023-02-28"`}, []string{`"2024-04-31"`, `"2024-13-01"`, `"2024-02-30"`, `"24-01-01"`}},
		{`{"type":"string","format":"date-time"}`, []string{`"2024-01-31T23:59:59Z"`, `"2024-01-31T00:00:00.123+05:30"`}, []string{`"2024-01-31 23:59:59Z"`, `"2024-01-31T24:00:00Z"`}},
		{`{"type":"string","format":"uuid"}`, []string{`"123e4567-e89b-12d3-a456-426614174000"`}, []string{`"123e4567e89b12d3a456426614174000"`}},
		{`{"type":"string","format":"email"}`, []string{`"ada.lovelace@example.com"`}, []string{`"ada@localhost"`, `"@x.com"`, `".a@x.com"`}},
		{`{"type":"string","format":"ipv4"}`, []string{`"192.168.0.1"`}, []string{`"256.1.1.1"`, `"01.1.1.1"`}},
		{`{"type":"string","format":"uri"}`, []string{`"https://example.com/a/b?q=1&r=%20#top"`, `"http://localhost:8080"`}, []string{`"example.com"`, `"https://exa mple.com"`, `"https://x.com/%zz"`}},
		{`{"type":"string","pattern":"ab+"}`, []string{`"ab"`, `"xxabbby"`}, []string{`"a"`, `"ba"`}},
		{`{"type":"string","pattern":"^(?i)ab$"}`, []string{`"AB"`, `"aB"`}, []string{`"abc"`}},
		{`{"type":"string","pattern":"^[^a-z]{2}$"}`, []string{`"AB"`, `"\""`[0:0] + `"\"é"`, `"\u0001!"`}, []string{`"Ab"`}},
		{`{"type":"string","pattern":"^a|b$"}`, []string{`"ax"`, `"xb"`}, []string{`"xa"`}},
	} {
		g := mustCompile(t, tc.schema, Options{})
		val := validator(t, tc.schema)
		for _, s := range tc.ok {
			if !complete(g, s) {
				t.Errorf("%s: %s refused", tc.schema, s)
			} else if err := validate(val, []byte(s)); err != nil {
				t.Errorf("%s: %s accepted, validator: %v", tc.schema, s, err)
			}
		}
		for _, s := range tc.bad {
			if complete(g, s) {
				t.Errorf("%s: %s accepted", tc.schema, s)
			}
		}
	}
}

func TestObjects(t *testing.T) {
	g := mustCompile(t, `{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"boolean"},"c":{"type":"null"}},"required":["b"]}`, Options{})
	for s, want := range map[string]bool{
		`{"b":true}`: true, `{"a":1,"b":true}`: true, `{"a":1,"b":true,"c":null}`: true, `{"b":true,"c":null}`: true,
		`{"b":true,"a":1}`: false, `{}`: false, `{"a":1}`: false, `{"b":true,"x":[1,{"y":"z"}]}`: true,
		`{"b":true,"a":1,"x":2}`: false, `{"b":true,"b":false}`: false, `{"b":true,"c":null,"ab":2}`: true,
		`{"b":true,"aé":1}`: true, `{"b":true,"":1}`: true,
	} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
	g = mustCompile(t, `{"type":"object","properties":{"é":{"type":"integer"}},"additionalProperties":{"type":"integer"}}`, Options{})
	for s, want := range map[string]bool{`{"é":1}`: true, `{"è":1}`: true, `{"é":1,"é":2}`: false, `{"éa":1}`: true, `{"x":true}`: false} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}

func TestWhitespace(t *testing.T) {
	schema := `{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}},"required":["a"],"additionalProperties":false}`
	g := mustCompile(t, schema, Options{})
	if !complete(g, `{"a":[1,2]}`) || complete(g, `{"a": [1,2]}`) {
		t.Error("default: compact only")
	}
	g = mustCompile(t, schema, Options{Whitespace: 2})
	for s, want := range map[string]bool{"{ \"a\" : [ 1 ,\n 2 ] }": true, "{\n \"a\":[]}": true, "{\n  \"a\":[]}": false, "{   \"a\":[]}": false, ` {"a":[]}`: false} {
		if got := complete(g, s); got != want {
			t.Errorf("%q: %v, want %v", s, got, want)
		}
	}
}

func TestJSONObject(t *testing.T) {
	g, err := CompileJSONObject(testOpts(Options{AnyDepth: 3}))
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		`{}`: true, `{"a":[1,{"b":null}]}`: true, `{"a":[[[1]]]}`: false, `[1]`: false, `"x"`: false, `{"a":1,"a":2}`: true,
	} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}

func TestArrays(t *testing.T) {
	g := mustCompile(t, `{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":{"type":"boolean"},"minItems":1,"maxItems":4}`, Options{})
	for s, want := range map[string]bool{`[]`: false, `["a"]`: true, `["a",1]`: true, `["a",1,true,false]`: true, `["a",1,true,false,true]`: false, `[1]`: false, `["a",1,2]`: false} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
	g = mustCompile(t, `{"type":"array","items":{"type":"integer"},"minItems":2}`, Options{})
	for s, want := range map[string]bool{`[]`: false, `[1]`: false, `[1,2]`: true, `[1,2,3,4,5,6]`: true} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
	g = mustCompile(t, `{"type":"array"}`, Options{})
	for s, want := range map[string]bool{`[]`: true, `[1,"a",[{}]]`: true, `[1,]`: false} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}

// Tokens are checked by their bytes: a character split across tokens is
// accepted, an invalid sequence refused; EOS only where the value is
// complete; special tokens never.
func TestMatcherTokens(t *testing.T) {
	toks := [][]byte{[]byte(`"`), {0xC3}, {0xA9}, {0xA9, '"'}, {0xFF}, []byte(`"ab`), nil, nil, []byte("<tool_call>"), {0xED, 0xA0}}
	const special, eos = 6, 7
	v, err := NewVocab(toks, []int{eos})
	if err != nil {
		t.Fatal(err)
	}
	g := mustCompile(t, `{"type":"string","maxLength":20}`, Options{})
	c := NewConstraint(g, v, 0)
	m := c.NewMatcher()
	mask := make([]uint64, v.MaskWords())
	allowed := func() []int {
		m.FillMask(mask)
		var ids []int
		for id := range toks {
			if mask[0]>>id&1 == 1 {
				ids = append(ids, id)
				if !m.Allowed(id) {
					t.Errorf("mask allows %d, Allowed does not", id)
				}
			} else if m.Allowed(id) {
				t.Errorf("Allowed(%d), mask does not", id)
			}
		}
		return ids
	}
	if got := fmt.Sprint(allowed()); got != "[0 5]" {
		t.Errorf("start: %s", got)
	}
	for _, id := range []int{0, 1} {
		if err := m.Accept(id); err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(allowed()); got != "[2 3]" {
		t.Errorf("inside é: %s", got)
	}
	if err := m.Accept(0); !errors.Is(err, ErrRejected) {
		t.Errorf("quote inside a character: %v", err)
	}
	if err := m.Accept(3); err != nil {
		t.Fatal(err)
	}
	if !m.CanEnd() || !m.Done() {
		t.Errorf("after a complete string: CanEnd %v Done %v", m.CanEnd(), m.Done())
	}
	if got := fmt.Sprint(allowed()); got != "[7]" {
		t.Errorf("done: %s", got)
	}
	if m.Allowed(special) {
		t.Error("special token allowed")
	}
	if err := m.Accept(eos); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(allowed()); got != "[]" {
		t.Errorf("after EOS: %s", got)
	}
	m.Reset()
	if err := m.Accept(0); err != nil {
		t.Fatal(err)
	}
	fork := m.Clone()
	if err := fork.Accept(8); err != nil {
		t.Errorf("<tool_call> as text: %v", err)
	}
	if m.Allowed(eos) || !fork.Allowed(0) || m.Allowed(9) {
		t.Error("clone not independent, or a surrogate allowed")
	}
}

func TestMergedAllOf(t *testing.T) {
	schema := `{"allOf":[{"type":"object","properties":{"a":{"type":"integer","minimum":0}},"required":["a"]},{"properties":{"a":{"maximum":5},"b":{"type":"string","maxLength":2}},"required":["b"],"additionalProperties":false}]}`
	g := mustCompile(t, schema, Options{})
	for s, want := range map[string]bool{`{"a":3,"b":"x"}`: true, `{"a":6,"b":"x"}`: false, `{"a":3}`: false, `{"a":3,"b":"x","c":1}`: false} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
	// A listed name that needs an escape is written with one; additional
	// names are written without.
	g = mustCompile(t, `{"type":"object","properties":{"a\"b":{"type":"null"}}}`, Options{})
	for s, want := range map[string]bool{`{"a\"b":null}`: true, `{"a"b":null}`: false, `{"ab":null}`: true} {
		if got := complete(g, s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}

func TestMaskLogits(t *testing.T) {
	logits := make([]float32, 200)
	mask := make([]uint64, 3) // 192 ids
	mask[0] = ^uint64(0)
	mask[2] = 1 << 5
	MaskLogits(logits, mask)
	for i, l := range logits {
		want := i < 64 || i == 133
		if got := !math.IsInf(float64(l), -1); got != want {
			t.Fatalf("logit %d kept %v, want %v", i, got, want)
		}
	}
}

func TestPrefixSuffix(t *testing.T) {
	schema := `{"anyOf":[{"type":"object","properties":{"name":{"const":"get_weather"},"arguments":{"type":"object","properties":{"city":{"type":"string","maxLength":20}},"required":["city"],"additionalProperties":false}},"required":["name","arguments"],"additionalProperties":false}]}`
	g := mustCompile(t, schema, Options{Prefix: "<tool_call>\n", Suffix: "\n</tool_call>", Whitespace: 1})
	for s, want := range map[string]bool{
		"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>": true,
		"<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>":     true,
		"{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}":                                false,
		"<tool_call>\n{\"name\":\"other\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>":           false,
	} {
		if got := complete(g, s); got != want {
			t.Errorf("%q: %v, want %v", s, got, want)
		}
	}
}

func TestMaskCacheBound(t *testing.T) {
	v := synthVocab(5)
	g := mustCompile(t, `{"type":"string","maxLength":50}`, Options{})
	c := NewConstraint(g, v, 8)
	m := c.NewMatcher()
	held := m.Mask()
	want := append([]uint64(nil), held...)
	if err := m.AcceptBytes([]byte(`"`)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		m.Mask()
		if err := m.AcceptBytes([]byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.masks); n > 8 {
		t.Errorf("%d masks cached, bound 8", n)
	}
	for i := range want {
		if held[i] != want[i] {
			t.Fatal("a held mask changed after eviction")
		}
	}
}
