// gen.js: the expected renderings of conversations.jsonl with each chat
// template in templates.json, by @huggingface/jinja (the Jinja engine
// transformers.js applies chat templates with), offline:
//   node gen.js > expected.jsonl   (NODE_PATH naming @huggingface/jinja@0.5.11)
const { Template } = require('@huggingface/jinja');
const fs = require('fs');
const templates = JSON.parse(fs.readFileSync(__dirname + '/templates.json', 'utf8'));
const convs = fs.readFileSync(__dirname + '/conversations.jsonl', 'utf8').split('\n').filter(Boolean).map(JSON.parse);
for (const name of Object.keys(templates).sort()) {
  const t = templates[name];
  const tmpl = new Template(t.chat_template);
  convs.forEach((c, i) => {
    const out = tmpl.render({ messages: c.messages, add_generation_prompt: c.add_generation_prompt,
      bos_token: t.bos_token || '', eos_token: t.eos_token || '' });
    process.stdout.write(JSON.stringify({ template: name, conversation: i, text: out }) + '\n');
  });
}
