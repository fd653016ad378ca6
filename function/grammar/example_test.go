package grammar_test

import (
	"fmt"

	"github.com/sous-ai/sous/function/grammar"
)

func Example() {
	g, err := grammar.Compile([]byte(`{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false}`), grammar.Options{})
	if err != nil {
		panic(err)
	}
	// A toy vocabulary: token 4 is the end of sequence.
	tokens := [][]byte{[]byte(`{"ok":`), []byte(`true`), []byte(`}`), []byte(`false}`), nil}
	v, err := grammar.NewVocab(tokens, []int{4})
	if err != nil {
		panic(err)
	}
	m := grammar.NewConstraint(g, v, 0).NewMatcher()
	mask := make([]uint64, v.MaskWords())
	for !m.Done() {
		m.FillMask(mask)
		for id := range tokens {
			if mask[id/64]>>(id%64)&1 == 1 {
				fmt.Printf("%q ", tokens[id])
				if err := m.Accept(id); err != nil {
					panic(err)
				}
				break
			}
		}
	}
	fmt.Println(m.CanEnd())
	// Output: "{\"ok\":" "true" "}" true
}

func ExampleCompile_unsupported() {
	_, err := grammar.Compile([]byte(`{"type":"object","properties":{"n":{"type":"integer","multipleOf":5}}}`), grammar.Options{})
	fmt.Println(err)
	// Output: grammar: unsupported keyword "multipleOf" at #/properties/n
}
