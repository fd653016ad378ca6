// Package grammar constrains a language model's output to JSON that a JSON
// Schema accepts: it compiles the schema into a deterministic automaton over
// bytes and turns the automaton's state into a mask of the vocabulary's
// allowed token ids at each decode step.
//
// # Use
//
// Compile (or CompileJSONObject for json_object mode) once per schema; the
// Grammar is immutable. Build a Vocab once per tokenizer from each token
// id's bytes and the end-of-sequence ids. Bind the two with NewConstraint,
// once per (schema, vocabulary), and share it: it caches each automaton
// state's mask. Each sequence gets its own Matcher (NewMatcher). Per step:
//
//	id := sample(logits)              // sample first...
//	if !m.Allowed(id) {               // ...check the one token (bytes walked)
//		m.FillMask(mask)              // ...mask fully only on rejection
//		grammar.MaskLogits(logits, mask)
//		id = sample(logits)
//	}
//	m.Accept(id)
//	if m.Done() { finish("stop") }    // complete, nothing may follow
//
// With plain temperature sampling, sampling first and resampling under the
// mask on rejection draws from the same distribution as masking first (an
// allowed token is kept with its probability; a rejection redraws from the
// allowed ones); top-k and top-p cut before the mask in the first draw, so
// there the two differ slightly.
//
// The end-of-sequence ids are in the mask exactly where the text so far is
// a complete value (CanEnd); accepting one ends the matcher (Done).
// Tokens are checked by their bytes, so a byte-level token may end inside a
// UTF-8 character: the next token must complete it. Special tokens that are
// not text (nil bytes in the Vocab) are never allowed; added tokens that are
// text ("<tool_call>") are plain bytes.
//
// Every error Compile returns matches ErrSchema and is the caller's fault (a
// 400): *UnsupportedError names a keyword the compiler cannot enforce,
// *LimitError the limit a schema exceeded, *SchemaError a schema that is not
// valid or that no value satisfies.
//
// # Keywords
//
// Enforced:
//   - type: object, array, string, number, integer, boolean, null, and lists
//     of them; without type, every type (each with its keywords).
//   - properties, required, additionalProperties (false; true or absent:
//     any value under names not listed; a schema: values of that schema).
//     Members come in the order properties lists them; an optional one is
//     present or absent in its place; additional members come after the
//     listed ones and have names without escapes. A required name not in
//     properties is a member with additionalProperties' schema, after the
//     listed ones.
//   - items, prefixItems, minItems, maxItems; uniqueItems false.
//   - minLength, maxLength (characters, as JSON Schema counts them; escapes
//     of surrogates are not produced, raw UTF-8 is).
//   - minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, or
//     draft 4's booleans): any bounds on integers; whole-number bounds on
//     numbers (a number with bounds has no exponent); a fractional bound on
//     a number is refused.
//   - enum, const (with type beside them; compared as compact JSON text).
//   - anyOf, oneOf as alternatives (oneOf's exactly-one is not enforced:
//     keep its branches disjoint), allOf by merging its subschemas; keywords
//     beside anyOf/oneOf are merged into each branch. Merging takes
//     keywords that appear once, equal values, type lists (intersected) and
//     required lists (joined), and refuses other conflicts.
//   - $ref to "#" or a JSON pointer into the same document ($defs,
//     definitions, ...). A recursive $ref is expanded Limits.RefRecursion
//     times; deeper, that branch is not produced.
//   - format: date, time, date-time, uuid, email, hostname, ipv4, uri — each as a
//     regular language inside the format (dates check days per month and
//     stop February at the 28th; email: dot-atom local parts of letters,
//     digits, "_", "+", "-", and 2 to 4 domain labels; labels up to 32
//     characters; uri: http and https URLs with a host name, an optional
//     port, path, query and fragment). Other formats are refused.
//   - pattern: a regular expression (Go's RE2 syntax, which covers the
//     patterns schemas use: classes, \d \w \s, groups, alternation,
//     repetition, (?i)), unanchored as JSON Schema says unless it starts
//     with ^ or ends with $; lookaround, backreferences and word boundaries
//     are refused. Not combined with format, minLength or maxLength.
//   - Annotations are accepted and do nothing: title, description, default,
//     examples, deprecated, readOnly, writeOnly, $schema, $comment, $id,
//     $anchor, $defs, definitions.
//
// Every other keyword is an *UnsupportedError naming it — never ignored:
// not, if/then/else, patternProperties, propertyNames, min/maxProperties,
// dependentRequired, dependentSchemas, dependencies, contains, min/
// maxContains, unevaluatedProperties/Items, additionalItems, multipleOf,
// uniqueItems true, content*, $dynamicRef, discriminator, nullable, x-…
// OpenAI's strict mode (every property required, additionalProperties
// false) compiles to the tightest grammar: one fixed member order.
//
// # Output form
//
// Output is compact JSON by default: no whitespace between tokens, not
// before the value nor after it. Options.Whitespace allows up to that many
// whitespace bytes at each place JSON allows them (a bound, so that a model
// cannot pad forever). Numbers have at most Options.IntDigits integer and
// FracDigits fraction digits (default 16 each) and at most two exponent
// digits; integers are canonical ("-0" and leading zeros are not produced).
// An unconstrained value (json_object mode, {} or true, additionalProperties
// or items absent) nests at most Options.AnyDepth arrays and objects.
// Options.Prefix and Suffix put literal text around the value (a tool-call
// format's tags; a forced tool is then an object schema whose "name" is a
// const).
//
// # Limits
//
// Limits bound a hostile schema: its size in bytes (default 256 KiB), its
// nesting depth, subschemas through $ref included (32), values in one enum
// (1024), automaton states before (400,000) and after (100,000)
// determinization, and compile time (1s). A schema over one is refused fast
// with a *LimitError naming the limit. Counted structures cost states in
// proportion: maxLength n costs about 14n states, maxItems n copies the item
// n times.
//
// # Cost
//
// A Vocab holds a byte trie of the vocabulary (for Qwen3's 151,669 tokens,
// 333,106 nodes, about 6 MB). A state's mask is a walk of the trie that
// skips every subtree the automaton rejects at its first byte and takes
// whole subtrees of string text at once where the state accepts that much
// text whatever it is (per state, the bytes of any valid UTF-8 text it
// accepts, found once per grammar): microseconds where few tokens fit
// (after a key, inside a number), a few hundred microseconds inside a
// string, where most do; a millisecond or two where the text that may
// follow is short or restricted byte by byte (the last characters before
// a maxLength, a pattern, an email).
// Masks are cached per state in the Constraint, so each state pays once
// while the cache holds it. Allowed walks one token's bytes (tens of
// nanoseconds). Matchers of one Constraint may compute masks concurrently,
// so the engine can compute the next step's mask while the model runs.
package grammar
