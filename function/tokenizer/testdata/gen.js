// gen.js: the expected encodings of corpus.jsonl, from Hugging Face's own
// tokenizers library (npm tokenizers@0.23.2, its Rust core as a Node
// binding, offline). make tokenizer-parity runs it:
//   node gen.js TOKENIZER.json < corpus.jsonl > expected/NAME.jsonl
// Each line: the file's own truncation, special tokens added, no padding;
// the ids decoded with special tokens skipped and kept; then "truncated":
// the pair-truncation variants (16 tokens; longest_first, only_first,
// only_second; right and left) where they apply.
const {Tokenizer} = require('tokenizers');
const fs = require('fs');
(async () => {
  const path = process.argv[2];
  const lines = fs.readFileSync(0, 'utf8').split('\n').filter(Boolean).map(JSON.parse);
  const base = await Tokenizer.fromFile(path);
  base.disablePadding();
  const enc = async (t, x) => {
    const e = x.pair === undefined ? await t.encode(x.text) : await t.encode(x.text, x.pair);
    return {ids: e.getIds(), type_ids: e.getTypeIds(), offsets: e.getOffsets()};
  };
  const variants = [];
  for (const strategy of ['LongestFirst', 'OnlyFirst', 'OnlySecond']) {
    for (const direction of ['right', 'left']) {
      const t = await Tokenizer.fromFile(path);
      t.disablePadding();
      t.setTruncation(16, {strategy, direction});
      variants.push({strategy, direction, t});
    }
  }
  for (const x of lines) {
    const out = await enc(base, x);
    out.decoded = await base.decode(out.ids, true);
    out.decoded_special = await base.decode(out.ids, false);
    out.truncated = [];
    for (const v of variants) {
      if (x.pair === undefined && v.strategy === 'OnlySecond') continue;
      try {
        const e = await enc(v.t, x);
        out.truncated.push({max_length: 16, strategy: v.strategy, direction: v.direction, ...e});
      } catch (err) {
        out.truncated.push({max_length: 16, strategy: v.strategy, direction: v.direction, error: String(err)});
      }
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
})();
