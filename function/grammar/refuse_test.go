package grammar

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestRefusedKeywords(t *testing.T) {
	for _, tc := range []struct {
		keyword, schema string
	}{
		{"not", `{"not":{"type":"string"}}`},
		{"if", `{"if":{"type":"string"},"then":{"maxLength":3}}`},
		{"then", `{"then":{"maxLength":3}}`},
		{"else", `{"else":{"maxLength":3}}`},
		{"patternProperties", `{"type":"object","patternProperties":{"^a":{"type":"string"}}}`},
		{"propertyNames", `{"type":"object","propertyNames":{"maxLength":3}}`},
		{"minProperties", `{"type":"object","minProperties":1}`},
		{"maxProperties", `{"type":"object","maxProperties":1}`},
		{"dependentRequired", `{"type":"object","dependentRequired":{"a":["b"]}}`},
		{"dependentSchemas", `{"type":"object","dependentSchemas":{"a":{}}}`},
		{"dependencies", `{"type":"object","dependencies":{"a":["b"]}}`},
		{"unevaluatedProperties", `{"type":"object","unevaluatedProperties":false}`},
		{"unevaluatedItems", `{"type":"array","unevaluatedItems":false}`},
		{"contains", `{"type":"array","contains":{"type":"integer"}}`},
		{"minContains", `{"type":"array","minContains":1}`},
		{"maxContains", `{"type":"array","maxContains":1}`},
		{"additionalItems", `{"type":"array","additionalItems":false}`},
		{"multipleOf", `{"type":"integer","multipleOf":3}`},
		{"uniqueItems", `{"type":"array","uniqueItems":true}`},
		{"contentEncoding", `{"type":"string","contentEncoding":"base64"}`},
		{"contentMediaType", `{"type":"string","contentMediaType":"application/json"}`},
		{"contentSchema", `{"type":"string","contentSchema":{}}`},
		{"$dynamicRef", `{"$dynamicRef":"#meta"}`},
		{"$recursiveRef", `{"$recursiveRef":"#"}`},
		{"discriminator", `{"oneOf":[{"type":"object"}],"discriminator":{"propertyName":"kind"}}`},
		{"nullable", `{"type":"string","nullable":true}`},
		{"x-custom", `{"type":"string","x-custom":1}`},
		{"format", `{"type":"string","format":"uri-template"}`},
		{"pattern", `{"type":"string","pattern":"(?=a)b"}`},
		{"pattern", `{"type":"string","pattern":"a\\bb"}`},
		{"maxLength", `{"type":"string","format":"date","maxLength":4}`},
		{"pattern", `{"type":"string","format":"date","pattern":"^2"}`},
		{"$ref", `{"$ref":"https://example.com/schema.json"}`},
		{"$ref", `{"$ref":"#anchor"}`},
		{"type", `{"$ref":"#/$defs/a","type":"string","$defs":{"a":{}}}`},
		{"items", `{"type":"array","items":[{"type":"string"}]}`},
		{"minimum", `{"type":"number","minimum":0.5}`},
		{"maximum", `{"type":"number","maximum":2.25}`},
		{"minLength", `{"allOf":[{"minLength":1},{"minLength":2}]}`},
		{"maxLength", `{"enum":["a","bb"],"maxLength":1}`},
		{"oneOf", `{"anyOf":[{}],"oneOf":[{}]}`},
	} {
		t.Run(tc.keyword, func(t *testing.T) {
			_, err := Compile([]byte(tc.schema), testOpts(Options{}))
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("Compile(%s) = %v, want an *UnsupportedError", tc.schema, err)
			}
			if ue.Keyword != tc.keyword {
				t.Errorf("Compile(%s): keyword %q, want %q (%v)", tc.schema, ue.Keyword, tc.keyword, err)
			}
			if !errors.Is(err, ErrSchema) {
				t.Errorf("%v is not ErrSchema", err)
			}
			if !strings.Contains(err.Error(), tc.keyword) {
				t.Errorf("%q does not name %q", err, tc.keyword)
			}
		})
	}
}

func TestRefusedNested(t *testing.T) {
	_, err := Compile([]byte(`{"type":"object","properties":{"a":{"type":"array","items":{"type":"object","properties":{"b":{"type":"string","not":{}}}}}}}`), testOpts(Options{}))
	var ue *UnsupportedError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v", err)
	}
	if got, want := ue.Path, "#/properties/a/items/properties/b"; got != want {
		t.Errorf("path %q, want %q", got, want)
	}
}

func TestInvalidSchemas(t *testing.T) {
	for _, s := range []string{
		`not json`, `{"type":5}`, `{"type":"strung"}`, `{"minLength":"3","type":"string"}`,
		`{"properties":[],"type":"object"}`, `{"required":"a","type":"object"}`,
		`{"$ref":"#/$defs/missing"}`, `{"enum":3}`, `{"anyOf":[]}`, `3`, `{"a":1,"a":2}`, `{} {}`,
		`{"type":"object","properties":{"a":false},"required":["a"]}`,
		`{"type":"string","minLength":5,"maxLength":2}`,
		`{"type":"integer","minimum":5,"maximum":4}`,
	} {
		_, err := Compile([]byte(s), testOpts(Options{}))
		var se *SchemaError
		if !errors.As(err, &se) || !errors.Is(err, ErrSchema) {
			t.Errorf("Compile(%s) = %v, want a *SchemaError", s, err)
		}
	}
}

func TestLimits(t *testing.T) {
	deep := strings.Repeat(`{"type":"array","items":`, 40) + `{}` + strings.Repeat(`}`, 40)
	var enum []string
	for i := 0; i < 2000; i++ {
		enum = append(enum, fmt.Sprint(i))
	}
	for _, tc := range []struct {
		limit  string
		schema string
		opts   Options
	}{
		{"schema bytes", `{"type":"string","description":"` + strings.Repeat("x", 300<<10) + `"}`, Options{}},
		{"depth", deep, Options{}},
		{"depth", `{"$defs":{"a":{"type":"array","items":{"$ref":"#/$defs/a"}}},"$ref":"#/$defs/a"}`, Options{Limits: Limits{Depth: 4, RefRecursion: 10}}},
		{"enum", `{"enum":[` + strings.Join(enum, ",") + `]}`, Options{}},
		{"nfa states", `{"type":"string","maxLength":1000000}`, Options{}},
		// Shared CPUs slow the build of 400,000 states: the compile-time limit
		// is not what this case tests.
		{"nfa states", `{"type":"array","items":{"type":"string","maxLength":100},"maxItems":1000}`, Options{Limits: Limits{CompileTime: time.Minute}}},
		{"states", largeSchema(16), Options{Limits: Limits{States: 500}}},
		{"compile time", largeSchema(64), Options{Limits: Limits{CompileTime: time.Nanosecond}}},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			start := time.Now()
			_, err := Compile([]byte(tc.schema), tc.opts)
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrSchema) {
				t.Fatalf("got %v, want a *LimitError", err)
			}
			if le.Limit != tc.limit {
				t.Errorf("limit %q, want %q (%v)", le.Limit, tc.limit, err)
			}
			// Fast means well within a second on an idle CPU; the bound
			// leaves room for the race detector on shared ones.
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("refused after %v", d)
			}
		})
	}
}

// A recursive $ref is expanded RefRecursion times; a recursion that must go
// deeper admits no value.
func TestRefRecursion(t *testing.T) {
	g, err := Compile([]byte(`{"$defs":{"n":{"type":"object","properties":{"k":{"type":"array","items":{"$ref":"#/$defs/n"},"maxItems":1}},"required":["k"],"additionalProperties":false}},"$ref":"#/$defs/n"}`), testOpts(Options{Limits: Limits{RefRecursion: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	for text, want := range map[string]bool{
		`{"k":[]}`:                 true,
		`{"k":[{"k":[]}]}`:         true,
		`{"k":[{"k":[{"k":[]}]}]}`: false,
	} {
		if _, got := g.Match([]byte(text)); got != want {
			t.Errorf("%s: %v, want %v", text, got, want)
		}
	}
	_, err = Compile([]byte(`{"$defs":{"n":{"type":"object","properties":{"k":{"$ref":"#/$defs/n"}},"required":["k"]}},"$ref":"#/$defs/n"}`), testOpts(Options{}))
	var se *SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("required recursion: got %v, want a *SchemaError", err)
	}
}

func TestRefusedMerges(t *testing.T) {
	for _, tc := range []struct{ keyword, schema string }{
		{"additionalProperties", `{"allOf":[{"properties":{"x":{}}},{"properties":{"y":{}},"additionalProperties":false}]}`},
		{"additionalProperties", `{"type":"object","additionalProperties":false,"anyOf":[{"properties":{"z":{}}}]}`},
		{"items", `{"allOf":[{"prefixItems":[{}]},{"items":{"type":"string"}}]}`},
		{"maximum", `{"allOf":[{"maximum":3},{"maximum":4}]}`},
	} {
		_, err := Compile([]byte(tc.schema), testOpts(Options{}))
		var ue *UnsupportedError
		if !errors.As(err, &ue) || ue.Keyword != tc.keyword {
			t.Errorf("Compile(%s) = %v, want unsupported %q", tc.schema, err, tc.keyword)
		}
	}
}
