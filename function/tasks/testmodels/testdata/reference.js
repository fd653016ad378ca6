// The reference for the language-model tests: transformers.js renders each
// conversation with the model's chat template and generates greedily, and
// this prints what it saw.
//
//   node reference.js MODEL_DIR DTYPE [SUBFOLDER] < request.json
//
// request.json: {"conversations": [[{"role", "content"}, ...], ...],
// "max_new_tokens": N}. Output, one JSON object: {"results": [{"prompt_ids",
// "generated_ids", "top": per step the 5 largest logits as [id, logit]}]}.
// NODE_PATH must reach @huggingface/transformers (make transformers-js).
const path = require('path');

async function main() {
  const [dir, dtype, subfolder] = process.argv.slice(2);
  const { env, AutoTokenizer, AutoModelForCausalLM } = require('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.localModelPath = path.dirname(path.resolve(dir)) + '/';
  const name = path.basename(path.resolve(dir));
  const request = JSON.parse(require('fs').readFileSync(0, 'utf8'));

  const tokenizer = await AutoTokenizer.from_pretrained(name);
  const opts = { dtype, device: 'cpu' };
  if (subfolder !== undefined) opts.subfolder = subfolder;
  const model = await AutoModelForCausalLM.from_pretrained(name, opts);

  const results = [];
  for (const messages of request.conversations) {
    const inputs = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, return_dict: true });
    const promptIds = Array.from(inputs.input_ids.data, Number);
    const top = [];
    // Sees the logits of each step after generate's own processors (none
    // when greedy), before the argmax.
    const record = (ids, logits) => {
      const data = logits.data;
      const best = [];
      for (let i = 0; i < data.length; i++) {
        if (best.length < 5 || data[i] > best[best.length - 1][1]) {
          best.push([i, data[i]]);
          best.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
          if (best.length > 5) best.pop();
        }
      }
      top.push(best);
      return logits;
    };
    const out = await model.generate({
      ...inputs,
      max_new_tokens: request.max_new_tokens,
      do_sample: false,
      logits_processor: [record],
    });
    const all = Array.from(out.data, Number);
    results.push({ prompt_ids: promptIds, generated_ids: all.slice(promptIds.length), top });
  }
  process.stdout.write(JSON.stringify({ results }) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
