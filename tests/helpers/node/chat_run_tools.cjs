'use strict';
// openai-node's tool runner: client.chat.completions.runTools({stream: true, ...}) with one JS function
// tool, which records each time it runs. Reports which tools ran, with what, and the final answer.
// args: model, messages | prompt, tool (name, default "get_weather"), result (what the tool returns),
//       maxChatCompletions (default 5), body (extra request fields).
const { main, openaiClient, versions } = require('./_common.cjs');

main(async (input) => {
  const { args } = input;
  const client = openaiClient(input);
  const name = args.tool ?? 'get_weather';
  const executed = [];
  const tool = {
    type: 'function',
    function: {
      name,
      description: 'Get the weather for a city.',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      parse: JSON.parse,
      function: async (parsed) => {
        executed.push({ name, arguments: parsed });
        return args.result ?? { city: parsed.city, weather: 'sunny' };
      },
    },
  };
  const runner = client.chat.completions.runTools(
    {
      model: args.model ?? 'fake-model',
      messages: args.messages ?? [{ role: 'user', content: args.prompt ?? 'What is the weather in Paris?' }],
      tools: [tool],
      stream: true,
      ...(args.body ?? {}),
    },
    { maxChatCompletions: args.maxChatCompletions ?? 5 },
  );
  const toolCalls = [];
  const toolResults = [];
  const contentDeltas = [];
  runner.on('functionToolCall', (call) => toolCalls.push({ name: call.name, arguments: call.arguments }));
  runner.on('functionToolCallResult', (content) => toolResults.push(content));
  runner.on('content', (delta) => contentDeltas.push(delta));
  const content = await runner.finalContent();
  return {
    versions: versions(),
    executed,
    tool_calls: toolCalls,
    tool_results: toolResults,
    content,
    content_deltas: contentDeltas,
    completions: runner.allChatCompletions().length,
    messages: runner.messages.map((m) => ({
      role: m.role,
      content: m.content ?? null,
      tool_call_id: m.tool_call_id ?? null,
      tool_calls: (m.tool_calls ?? []).map((c) => ({ id: c.id, name: c.function?.name, arguments: c.function?.arguments })),
    })),
  };
});
