package turn

import (
	"errors"
	"fmt"

	"github.com/sous-ai/sous/function/prompt"
)

// rawPrompt encodes a legacy completion's prompt as it is: no chat
// template, no special tokens added (those the model wants are written in
// the prompt, as they are in a template's output). A prompt that cannot
// fit the model's positions with maxTokens is refused, never cut: a cut
// prompt would be answered as another prompt.
func (r *generationRunner) rawPrompt(req *Request, maxTokens int) ([]int64, error) {
	if !req.Stateless {
		return nil, errors.New("turn: a raw prompt has no session to continue")
	}
	ids := r.dir.Tok.IDs(req.Text)
	if len(ids) == 0 {
		return nil, BadRequest("prompt: no tokens in %q", truncate(req.Text, 40))
	}
	if len(ids)+maxTokens > r.dir.MaxLength {
		return nil, fmt.Errorf("%w: %d prompt tokens and max_tokens %d, the model holds %d", prompt.ErrContextLength, len(ids), maxTokens, r.dir.MaxLength)
	}
	return ids, nil
}
