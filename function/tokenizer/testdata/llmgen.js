// llmgen.js: the expected encodings and decodings of llm_corpus.jsonl, from
// Hugging Face's own tokenizers library (npm tokenizers@0.23.2, its Rust
// core as a Node binding, offline). make tokenizer-parity runs it:
//   node llmgen.js TOKENIZER.json < llm_corpus.jsonl > expected/NAME.jsonl
// Each line: ids, type_ids and offsets (special tokens added, no padding or
// truncation), and the ids decoded with special tokens skipped and kept;
// then, special tokens kept, the ids less the first (a decode that starts
// inside a character) and the ids reversed (byte tokens out of order: the
// replacement-character rules).
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
      decoded_tail: await t.decode(ids.slice(1), false), decoded_reversed: await t.decode([...ids].reverse(), false),
    }) + '\n');
  }
})();
