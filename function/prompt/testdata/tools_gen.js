// tools_gen.js: the expected renderings of tools.jsonl (conversations with
// tool definitions, assistant tool calls and tool results) with each chat
// template in tool_templates.json, by transformers.js's
// apply_chat_template (tokenize: false), offline:
//   NODE_PATH=.cache/npm-transformers/node_modules node tools_gen.js \
//     .cache/llm-tokenizers > tools_expected.jsonl
// Each template renders with its tokenizer's special tokens (the
// tokenizer named beside it, from the llm-tokenizers cache). The messages
// get what sous does to OpenAI's messages before rendering (as vLLM does):
// a null content is "", and a call's arguments (JSON text) are the object
// they hold. A template that refuses a conversation gives {"error": ...}.
const path = require('path');
const fs = require('fs');

async function main() {
  const { env, AutoTokenizer } = require('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.localModelPath = path.resolve(process.argv[2]) + '/';
  const templates = JSON.parse(fs.readFileSync(__dirname + '/tool_templates.json', 'utf8'));
  const convs = fs.readFileSync(__dirname + '/tools.jsonl', 'utf8').split('\n').filter(Boolean).map(JSON.parse);
  for (const name of Object.keys(templates).sort()) {
    const t = templates[name];
    const tok = await AutoTokenizer.from_pretrained(t.tokenizer);
    convs.forEach((c, i) => {
      const messages = c.messages.map((m) => {
        const out = { ...m, content: m.content ?? '' };
        if (m.tool_calls) {
          out.tool_calls = m.tool_calls.map((tc) => {
            let args = tc.function.arguments;
            try {
              const v = JSON.parse(args);
              if (v !== null && typeof v === 'object' && !Array.isArray(v)) args = v;
            } catch (e) {}
            return { ...tc, function: { ...tc.function, arguments: args } };
          });
        }
        return out;
      });
      let line;
      try {
        const text = tok.apply_chat_template(messages, { tools: c.tools, chat_template: t.chat_template,
          add_generation_prompt: c.add_generation_prompt, tokenize: false });
        line = { template: name, conversation: i, text };
      } catch (e) {
        line = { template: name, conversation: i, error: String(e.message || e) };
      }
      process.stdout.write(JSON.stringify(line) + '\n');
    });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
