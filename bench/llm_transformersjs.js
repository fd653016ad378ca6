// transformers.js served the way a user would run it, for BENCH_ONLY=llm:
// a small Node HTTP server around generate(), one call per request, the
// requests in flight at once left to Node's event loop (onnxruntime-node
// runs each session.run off the main thread).
//
//   node llm_transformersjs.js MODEL_DIR DTYPE PORT
//
// POST / {"text": "...", "max_new_tokens": N} renders the text as one
// user message with the model's chat template, generates greedily and
// answers {"tokens": generated}. It prints "ready" once the model is
// loaded. NODE_PATH must reach @huggingface/transformers.
const http = require('http');
const path = require('path');

async function main() {
  const [dir, dtype, port] = process.argv.slice(2);
  const { env, AutoTokenizer, AutoModelForCausalLM } = require('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.localModelPath = path.dirname(path.resolve(dir)) + '/';
  const name = path.basename(path.resolve(dir));
  const tokenizer = await AutoTokenizer.from_pretrained(name);
  const model = await AutoModelForCausalLM.from_pretrained(name, { dtype, device: 'cpu' });

  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', async () => {
      try {
        const r = JSON.parse(body);
        const inputs = tokenizer.apply_chat_template([{ role: 'user', content: r.text }], { add_generation_prompt: true, return_dict: true });
        const n = inputs.input_ids.dims[1];
        const out = await model.generate({ ...inputs, max_new_tokens: r.max_new_tokens, do_sample: false });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ tokens: out.dims[1] - n }));
      } catch (e) {
        res.writeHead(500);
        res.end(String(e));
      }
    });
  });
  server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
