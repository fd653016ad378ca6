// speed.js TOKENIZER.json ROUNDS < corpus.jsonl: the Rust library's time
// (through its Node binding, the file's truncation, no padding) to encode
// the corpus once, best of ROUNDS, and to load the file, as
// "rust_ns_per_corpus N rust_load_ms M".
const {Tokenizer} = require('tokenizers');
const fs = require('fs');
(async () => {
  const start = process.hrtime.bigint();
  const t = await Tokenizer.fromFile(process.argv[2]);
  const load = Number(process.hrtime.bigint() - start) / 1e6;
  t.disablePadding();
  const lines = fs.readFileSync(0, 'utf8').split('\n').filter(Boolean).map(JSON.parse);
  const singles = lines.filter(x => x.pair === undefined).map(x => x.text);
  const pairs = lines.filter(x => x.pair !== undefined).map(x => [x.text, x.pair]);
  let best = Infinity;
  for (let r = 0; r < Number(process.argv[3] || 50); r++) {
    const start = process.hrtime.bigint();
    for (const s of singles) await t.encode(s);
    for (const [a, b] of pairs) await t.encode(a, b);
    best = Math.min(best, Number(process.hrtime.bigint() - start));
  }
  console.log('rust_ns_per_corpus', best, 'rust_load_ms', load.toFixed(0));
})();
