'use strict';
// openai-node's plain client.responses.create, non-stream (args.stream false) or stream: true, where
// every raw event is collected and the final response taken from the terminal event.
// args: model, input, tools, previous_response_id, stream, body (extra request fields).
const { main, openaiClient, versions } = require('./_common.cjs');

main(async (input) => {
  const { args } = input;
  const client = openaiClient(input);
  const body = {
    model: args.model ?? 'fake-model',
    input: args.input ?? 'hi',
    ...(args.tools ? { tools: args.tools } : {}),
    ...(args.previous_response_id ? { previous_response_id: args.previous_response_id } : {}),
    ...(args.body ?? {}),
  };
  if (!args.stream) {
    const response = await client.responses.create(body);
    return { versions: versions(), response, output_text: response.output_text ?? null };
  }
  const stream = await client.responses.create({ ...body, stream: true });
  const events = [];
  let final = null;
  for await (const event of stream) {
    events.push(event);
    if (['response.completed', 'response.incomplete', 'response.failed'].includes(event.type)) final = event.response;
  }
  const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
  return { versions: versions(), events, types: events.map((e) => e.type), response: final, text };
});
