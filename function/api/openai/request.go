package openai

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"

	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/turn"
)

// request is a chat completion request: every field that changes the
// answer is honoured or refused by name (fields).
type request struct {
	Model               string          `json:"model"`
	Messages            []message       `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *uint64         `json:"seed"`
	Stop                json.RawMessage `json:"stop"` // a string or a list of them
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N                 *int            `json:"n"`
	User              string          `json:"user"`
	FrequencyPenalty  *float64        `json:"frequency_penalty"`
	PresencePenalty   *float64        `json:"presence_penalty"`
	Logprobs          bool            `json:"logprobs"`
	TopLogprobs       *int            `json:"top_logprobs"`
	ResponseFormat    json.RawMessage `json:"response_format"`
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	LogitBias         json.RawMessage `json:"logit_bias"`
}

// fields are the request fields sous reads (the struct's), and ignored
// those it accepts and ignores because they do not change the answer.
var (
	fields = []string{"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
		"stream", "stream_options", "n", "user", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs",
		"response_format", "tools", "tool_choice", "parallel_tool_calls", "logit_bias"}
	ignored = []string{"metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
)

// message is one chat message; content is a string or a list of parts
// (null in an assistant message that calls tools).
type message struct {
	Role       string            `json:"role"`
	Content    json.RawMessage   `json:"content"`
	Name       string            `json:"name"`
	ToolCalls  []prompt.ToolCall `json:"tool_calls"`
	ToolCallID string            `json:"tool_call_id"`
}

// decode reads a request, refusing by name any field that would change
// the answer and that sous does not honour. A null field is an absent one.
func decode(body []byte) (request, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return request{}, turn.BadRequest("invalid JSON: %v", err)
	}
	var unknown []string
	for k, v := range raw {
		if string(v) != "null" && !slices.Contains(fields, k) && !slices.Contains(ignored, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return request{}, turn.BadRequest("%s: not supported by sous", strings.Join(unknown, ", "))
	}
	var r request
	if err := json.Unmarshal(body, &r); err != nil {
		return request{}, turn.BadRequest("invalid JSON: %v", err)
	}
	return r, nil
}

// text reads a message's content: a string, or a list of parts whose
// text parts are joined (other kinds of part are refused by name).
func (m message) text() (string, error) {
	if len(m.Content) == 0 || string(m.Content) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", turn.BadRequest("messages: content must be a string or a list of parts")
	}
	var texts []string
	for _, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", turn.BadRequest("messages: content part type %q is not supported (text only)", p.Type)
		}
		texts = append(texts, *p.Text)
	}
	return strings.Join(texts, "\n"), nil
}

// turn checks a chat request and returns the turn it asks for: its
// generation settings, its messages and the last user message (the turn's
// text).
func (r *request) turn() (turn.Request, error) {
	if len(r.Messages) == 0 {
		return turn.Request{}, turn.BadRequest("messages: at least one is required")
	}
	if err := r.refuse(); err != nil {
		return turn.Request{}, err
	}
	user, asked := "", false
	var msgs []prompt.Message
	for i, m := range r.Messages {
		switch m.Role {
		case "system", "user", "assistant", "developer", "tool":
		default:
			return turn.Request{}, turn.BadRequest("messages[%d]: role %q is not one of system, developer, user, assistant, tool", i, m.Role)
		}
		text, err := m.text()
		if err != nil {
			return turn.Request{}, err
		}
		pm := prompt.Message{Role: m.Role, Content: text}
		switch m.Role {
		case "user":
			user = text
			asked = asked || strings.TrimSpace(text) != ""
		case "tool":
			if m.ToolCallID == "" {
				return turn.Request{}, turn.BadRequest("messages[%d]: a tool message needs tool_call_id", i)
			}
			pm.ToolCallID = m.ToolCallID
			asked = true
		case "assistant":
			for k, c := range m.ToolCalls {
				if c.Type != "function" || c.Function.Name == "" || c.ID == "" {
					return turn.Request{}, turn.BadRequest("messages[%d].tool_calls[%d]: want {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}", i, k)
				}
			}
			pm.ToolCalls = m.ToolCalls
		}
		if m.Role != "assistant" && m.ToolCalls != nil {
			return turn.Request{}, turn.BadRequest("messages[%d]: only assistant messages have tool_calls", i)
		}
		msgs = append(msgs, pm)
	}
	if !asked {
		return turn.Request{}, turn.BadRequest("messages: no user message with content, nor tool result")
	}
	g := &turn.GenParams{MaxTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, Seed: r.Seed,
		FrequencyPenalty: r.FrequencyPenalty, PresencePenalty: r.PresencePenalty, Logprobs: r.Logprobs, TopLogprobs: r.TopLogprobs,
		Tools: r.Tools, ToolChoice: r.ToolChoice, ParallelToolCalls: r.ParallelToolCalls}
	if len(r.ResponseFormat) > 0 && string(r.ResponseFormat) != "null" {
		g.ResponseFormat = r.ResponseFormat
	}
	if r.MaxCompletionTokens != nil {
		if r.MaxTokens != nil && *r.MaxTokens != *r.MaxCompletionTokens {
			return turn.Request{}, turn.BadRequest("max_tokens %d and max_completion_tokens %d disagree", *r.MaxTokens, *r.MaxCompletionTokens)
		}
		g.MaxTokens = r.MaxCompletionTokens
	}
	if len(r.Stop) > 0 && string(r.Stop) != "null" {
		var one string
		if json.Unmarshal(r.Stop, &one) == nil {
			g.Stop = []string{one}
		} else if json.Unmarshal(r.Stop, &g.Stop) != nil {
			return turn.Request{}, turn.BadRequest("stop: a string or a list of strings")
		}
	}
	req := turn.Request{Text: user, Gen: g, Messages: msgs}
	if r.N != nil {
		if *r.N < 1 || *r.N > turn.MaxChoices {
			return turn.Request{}, turn.BadRequest("n %d: want 1 to %d", *r.N, turn.MaxChoices)
		}
		req.Choices = *r.N
	}
	return req, nil
}

// refuse names the fields that change the answer and that this build
// cannot honour: logit_bias.
func (r *request) refuse() error {
	if len(r.LogitBias) > 0 && string(r.LogitBias) != "null" && string(r.LogitBias) != "{}" {
		return turn.BadRequest("logit_bias: not supported by sous")
	}
	return nil
}

func (r *request) includeUsage() bool { return r.StreamOptions != nil && r.StreamOptions.IncludeUsage }
