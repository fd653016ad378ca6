// mkunigram.js LLAMA2_TOKENIZER.json OUT_DIR: two Unigram tokenizer.json
// files built with Hugging Face's library (npm tokenizers@0.23.2), which
// has no Unigram file among the language models fetched and no Unigram
// trainer in its Node binding. The vocabulary is Llama 2's first pieces
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
const out = process.argv[3];
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
