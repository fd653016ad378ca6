package openai

import (
	"errors"
	"testing"

	"github.com/sous-ai/sous/function/turn"
)

// FuzzLegacyRequests feeds bodies to the decoders of /v1/completions and
// /v1/embeddings: each either reads the body or refuses it as the
// caller's mistake (a 400), and never panics.
func FuzzLegacyRequests(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"hi","max_tokens":3,"n":2,"stop":["a","b"],"logprobs":2}`,
		`{"prompt":["a","b"],"echo":true,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"prompt":[1,2,3]}`, `{"prompt":[[1,2],[3]]}`, `{"prompt":"a","suffix":"b","best_of":2}`,
		`{"input":"hi","encoding_format":"base64","dimensions":32}`, `{"input":["a",""]}`, `{"input":[[1,2]]}`,
		`{"input":null,"user":"u"}`, `[]`, `{"prompt":{"a":1}}`, `{"input":1e400}`, "{\"input\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(what string, err error) {
			t.Helper()
			if err != nil && !errors.Is(err, turn.ErrBadRequest) {
				t.Fatalf("%s: %q: an error that is not the caller's: %v", what, body, err)
			}
		}
		var c completionRequest
		err := decodeKnown(body, &c, completionFields)
		if err == nil {
			_, err = c.prompts()
		}
		if err == nil {
			_, _, err = c.gen()
		}
		check("completions", err)
		var e embeddingsRequest
		err = decodeKnown(body, &e, embeddingsFields)
		if err == nil {
			_, err = e.texts()
		}
		check("embeddings", err)
	})
}
