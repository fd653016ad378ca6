// mktokenizers.js LLAMA2_TOKENIZER.json QWEN3_TOKENIZER.json OUT_DIR: small
// tokenizer.json files for what the fetched language models do not use,
// held to Hugging Face's library (npm tokenizers@0.23.2) like the others.
//
// Two Unigram files, built with the library (no Unigram file is among the
// language models fetched, and its Node binding has no Unigram trainer). The vocabulary is Llama 2's first pieces
// (its byte tokens included) with scores falling with the id, so Viterbi
// has real choices to make; the added tokens carry every flag
// (special or not, lstrip, rstrip, single_word, normalized).
//   unigram-metaspace: NFKC, Metaspace (always, split), unk, no byte
//     fallback, T5's "$A </s>" template, Metaspace decoder.
//   unigram-fallback: Lowercase, Metaspace (first, no split), byte
//     fallback, Llama 2's decoders (Replace, ByteFallback, Fuse, Strip).
const tk = require('tokenizers');
const fs = require('fs');
const src = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = process.argv[4];
const pieces = Object.entries(src.model.vocab).sort((a, b) => a[1] - b[1]).slice(0, 6000).map(([p]) => p);
const vocab = pieces.map((p, id) => [p, id < 3 ? 0 : -1 - id / 500]);
vocab.push(['</s>', 0], ['<pad>', 0]);
const added = (t) => {
  t.addSpecialTokens(['<pad>', '</s>', '<unk>']);
  t.addAddedTokens([
    new tk.AddedToken('<extra_id_0>', false, {normalized: false}),
    new tk.AddedToken('[LSTRIP]', false, {leftStrip: true, normalized: false}),
    new tk.AddedToken('[RSTRIP]', false, {rightStrip: true, normalized: false}),
    new tk.AddedToken('word', false, {singleWord: true, normalized: false}),
    new tk.AddedToken('Hello', false, {normalized: true}),
    new tk.AddedToken('[BOTH]', true, {leftStrip: true, rightStrip: true}),
  ]);
};
{
  const t = new tk.Tokenizer(tk.Unigram.init(vocab, {unkId: 0, byteFallback: false}));
  t.setNormalizer(tk.nfkcNormalizer());
  t.setPreTokenizer(tk.metaspacePreTokenizer('▁', 'always', true));
  t.setDecoder(tk.metaspaceDecoder('▁', 'always', true));
  added(t);
  const eos = vocab.findIndex(([p]) => p === '</s>');
  t.setPostProcessor(tk.templateProcessing('$A </s>', '$A </s> $B </s>', [['</s>', eos]]));
  t.save(out + '/unigram-metaspace.json');
}
{
  const t = new tk.Tokenizer(tk.Unigram.init(vocab, {unkId: 0, byteFallback: true}));
  t.setNormalizer(tk.sequenceNormalizer([tk.lowercase()]));
  t.setPreTokenizer(tk.metaspacePreTokenizer('▁', 'first', false));
  t.setDecoder(tk.sequenceDecoder([tk.replaceDecoder('▁', ' '), tk.byteFallbackDecoder(), tk.fuseDecoder(), tk.stripDecoder(' ', 1, 0)]));
  added(t);
  t.save(out + '/unigram-fallback.json');
}

// One GPT-2-style byte-level file: Qwen3's first 4,000 tokens and the
// merges among them, the ByteLevel pre-tokenizer with GPT-2's own regex and
// a prefix space, a Sequence post-processor (ByteLevel trim_offsets, then a
// template), the ByteLevel decoder. The binding has no ByteLevel decoder to
// set, so the file is written as JSON; the library reads it like any other.
{
  const q = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
  const vocab = {};
  for (const [k, id] of Object.entries(q.model.vocab)) if (id < 4000) vocab[k] = id;
  const has = (k) => Object.prototype.hasOwnProperty.call(vocab, k);
  const merges = q.model.merges.filter(([a, b]) => has(a) && has(b) && has(a + b));
  const eot = {id: 4000, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true};
  const bl = {type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true};
  const file = {
    version: '1.0', truncation: null, padding: null, added_tokens: [eot], normalizer: null,
    pre_tokenizer: bl,
    post_processor: {type: 'Sequence', processors: [bl, {type: 'TemplateProcessing',
      single: [{Sequence: {id: 'A', type_id: 0}}, {SpecialToken: {id: '<|endoftext|>', type_id: 0}}],
      pair: [{Sequence: {id: 'A', type_id: 0}}, {Sequence: {id: 'B', type_id: 1}}, {SpecialToken: {id: '<|endoftext|>', type_id: 1}}],
      special_tokens: {'<|endoftext|>': {id: '<|endoftext|>', ids: [4000], tokens: ['<|endoftext|>']}}}]},
    decoder: bl,
    model: {type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges},
  };
  fs.writeFileSync(out + '/bytelevel-gpt2.json', JSON.stringify(file));
  // The library must read it.
  Promise.resolve(tk.Tokenizer.fromFile(out + '/bytelevel-gpt2.json')).catch((e) => { console.error(e); process.exit(1); });
}
