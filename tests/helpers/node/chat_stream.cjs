'use strict';
// openai-node's chat stream helper: client.chat.completions.stream(...), collecting what it assembles.
// args: model, messages | prompt, tools, body (extra request fields).
const { main, openaiClient, versions } = require('./_common.cjs');

main(async (input) => {
  const { args } = input;
  const client = openaiClient(input);
  const body = {
    model: args.model ?? 'fake-model',
    messages: args.messages ?? [{ role: 'user', content: args.prompt ?? 'hi' }],
    ...(args.tools ? { tools: args.tools } : {}),
    ...(args.body ?? {}),
  };
  const stream = client.chat.completions.stream(body);
  const contentDeltas = [];
  const argumentsDone = [];
  let chunks = 0;
  stream.on('chunk', () => { chunks += 1; });
  stream.on('content.delta', ({ delta }) => contentDeltas.push(delta));
  stream.on('tool_calls.function.arguments.done', ({ index, name, arguments: args_ }) => argumentsDone.push({ index, name, arguments: args_ }));
  const completion = await stream.finalChatCompletion();
  const choice = completion.choices[0] ?? {};
  const message = choice.message ?? {};
  return {
    versions: versions(),
    content: message.content ?? null,
    tool_calls: (message.tool_calls ?? []).map((call) => ({ id: call.id, type: call.type, name: call.function?.name, arguments: call.function?.arguments })),
    finish_reason: choice.finish_reason ?? null,
    content_deltas: contentDeltas,
    arguments_done: argumentsDone,
    chunks,
    usage: completion.usage ?? null,
    completion,
  };
});
