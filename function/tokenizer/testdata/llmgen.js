// llmgen.js: the expected encodings and decodings of llm_corpus.jsonl, from
// Hugging Face's own tokenizers library (npm tokenizers@0.23.2, its Rust
// core as a Node binding, offline). make tokenizer-parity runs it:
//   node llmgen.js TOKENIZER.json < llm_corpus.jsonl > expected/NAME.jsonl
// Each line: ids, type_ids and offsets (special tokens added, no padding or
// truncation), and the ids decoded with special tokens skipped and kept.
const {Tokenizer} = require('tokenizers');
const fs = require('fs');
(async () => {
  const lines = fs.readFileSync(0, 'utf8').split('\n').filter(Boolean).map(JSON.parse);
  const t = await Tokenizer.fromFile(process.argv[2]);
  t.disablePadding();
  t.disableTruncation();
  for (const x of lines) {
    const e = x.pair === undefined ? await t.encode(x.text) : await t.encode(x.text, x.pair);
    const ids = e.getIds();
    process.stdout.write(JSON.stringify({
      ids, type_ids: e.getTypeIds(), offsets: e.getOffsets(),
      decoded: await t.decode(ids, true), decoded_special: await t.decode(ids, false),
    }) + '\n');
  }
})();
