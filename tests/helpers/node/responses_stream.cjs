'use strict';
// openai-node's Responses stream helper: client.responses.stream(...), which accumulates the events into
// a snapshot itself (and throws on events it does not understand). Reports its events and final response.
// args: model, input, tools, previous_response_id, body (extra request fields).
const { main, openaiClient, versions } = require('./_common.cjs');

main(async (input) => {
  const { args } = input;
  const client = openaiClient(input);
  const stream = client.responses.stream({
    model: args.model ?? 'fake-model',
    input: args.input ?? 'hi',
    ...(args.tools ? { tools: args.tools } : {}),
    ...(args.previous_response_id ? { previous_response_id: args.previous_response_id } : {}),
    ...(args.body ?? {}),
  });
  const types = [];
  const textSnapshots = [];
  const argumentDeltas = [];
  stream.on('event', (event) => types.push(event.type));
  stream.on('response.output_text.delta', (event) => textSnapshots.push(event.snapshot));
  stream.on('response.function_call_arguments.delta', (event) => argumentDeltas.push(event.delta));
  const response = await stream.finalResponse();
  return {
    versions: versions(),
    types,
    text_snapshots: textSnapshots,
    argument_deltas: argumentDeltas,
    response,
    output_text: response.output_text ?? null,
  };
});
