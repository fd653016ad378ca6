package turn

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sous-ai/sous/function/tasks"
)

// Embedded is one text's embedding and the tokens it took (special tokens
// included), for usage.
type Embedded struct {
	Vector []float32
	Tokens int
}

// Embeds reports whether the served model embeds text: a model
// directory whose task is feature extraction.
func (s *Service) Embeds() bool {
	r, ok := s.runner.(*textRunner)
	return ok && r.dir.Task == tasks.FeatureExtraction
}

// Embed embeds texts, each a stateless item of the ring batcher as any
// other call, so that the texts of one request share batches with each
// other and with everyone else's. Every text is checked and encoded
// before any is queued: a text longer than the model's positions is
// ErrContextLength (an embedding of a cut text would silently answer for
// another text). At most window texts are queued at once, so that one
// long list keeps batches full without taking the whole ring (0: all at
// once). Embed may be called concurrently.
func (s *Service) Embed(ctx context.Context, texts []string, window int) ([]Embedded, error) {
	r, ok := s.runner.(*textRunner)
	if !ok || r.dir.Task != tasks.FeatureExtraction {
		return nil, BadRequest("model %s does not embed text: serve a feature-extraction model directory", s.runner.Model())
	}
	reqs := make([]*Request, len(texts))
	for i, text := range texts {
		if text == "" {
			return nil, BadRequest("input[%d]: empty text", i)
		}
		if err := checkText(text); err != nil {
			return nil, fmt.Errorf("input[%d]: %w", i, err)
		}
		enc, _ := r.dir.Tok.EncodeWith(text, nil, nil)
		if enc.Len() > r.dir.MaxLength {
			return nil, fmt.Errorf("%w: input[%d] is %d tokens, model %s holds %d", ErrContextLength, i, enc.Len(), r.m.Name(), r.dir.MaxLength)
		}
		reqs[i] = &Request{Stateless: true, Text: text, enc: &enc, inputs: r.dir.Inputs(enc)}
	}
	if window <= 0 {
		window = len(texts)
	}
	out := make([]Embedded, len(texts))
	errs := make([]error, len(texts))
	slots := make(chan struct{}, window)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, req := range reqs {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			res, err := s.submitStateless(ctx, req)
			if err != nil {
				errs[i] = err
				cancel() // the request fails whole: the rest need not run
				return
			}
			e, ok := res.Value.(*tasks.Embedding)
			if !ok {
				errs[i] = fmt.Errorf("turn: model %s gave %T, not an embedding", s.runner.Model(), res.Value)
				cancel()
				return
			}
			out[i] = Embedded{Vector: e.Embedding, Tokens: req.enc.Len()}
		}()
	}
	wg.Wait()
	// The failure that cancelled the rest, else the caller's leaving.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	for _, err := range errs {
		if err != nil {
			if parent.Err() != nil {
				return nil, parent.Err()
			}
			return nil, err
		}
	}
	return out, nil
}
