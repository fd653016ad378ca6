package tokenizer_test

import (
	"fmt"
	"strings"

	"github.com/sous-ai/sous/function/tokenizer"
)

// A generator's tokens shown as they come: a character made of several
// byte tokens appears once its last byte has come.
func ExampleStreamDecoder() {
	tok, err := tokenizer.Load("testdata/tokenizers/unigram-fallback.json")
	if err != nil {
		panic(err)
	}
	ids := tok.IDs("a😀b")
	s := tok.NewStreamDecoder(true)
	var pieces []string
	for _, id := range ids {
		if p := s.Next(id); p != "" {
			pieces = append(pieces, p)
		}
	}
	pieces = append(pieces, s.Flush())
	fmt.Printf("%d ids, pieces %q, whole %q\n", len(ids), strings.Join(pieces, "|"), tok.Decode(ids))
	// Output: 6 ids, pieces "a|😀|b|", whole "a😀b"
}
