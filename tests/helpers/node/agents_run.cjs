'use strict';
// The OpenAI Agents SDK for JS (@openai/agents) on its default model, the Responses API, with two tools
// that record each time they run: get_weather and run_shell. Reports what ran and the final output.
// args: model (default "fake-model"), prompt, stream (run with {stream: true} and read every event),
//       chain (run "Hello" first, then the prompt with previousResponseId: the server keeps the conversation).
const { main, openaiClient, versions } = require('./_common.cjs');

main(async (input) => {
  const { Agent, run, tool, setDefaultOpenAIClient, setTracingDisabled } = require('@openai/agents');
  const { z } = require('zod');
  const { args } = input;
  setTracingDisabled(true);
  setDefaultOpenAIClient(openaiClient(input));
  const executed = [];
  const getWeather = tool({
    name: 'get_weather',
    description: 'The weather in a city.',
    parameters: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      executed.push({ name: 'get_weather', arguments: { city } });
      return 'sunny';
    },
  });
  const runShell = tool({
    name: 'run_shell',
    description: 'Run a shell command.',
    parameters: z.object({ command: z.string() }),
    execute: async ({ command }) => {
      executed.push({ name: 'run_shell', arguments: { command } });
      return 'done';
    },
  });
  const agent = new Agent({
    name: 'assistant',
    instructions: 'Help with the weather.',
    model: args.model ?? 'fake-model',
    tools: [getWeather, runShell],
  });
  const prompt = args.prompt ?? 'What is the weather in Paris?';
  const options = {};
  if (args.chain) options.previousResponseId = (await run(agent, 'Hello')).lastResponseId;
  const events = [];
  let result;
  if (args.stream) {
    result = await run(agent, prompt, { ...options, stream: true });
    for await (const event of result) {
      if (event.type === 'raw_model_stream_event') events.push(event.data.type);
    }
    await result.completed;
    if (result.error) throw result.error;
  } else {
    result = await run(agent, prompt, options);
  }
  return {
    versions: versions('@openai/agents'),
    executed,
    final_output: result.finalOutput ?? null,
    text_deltas: events.filter((type) => type === 'output_text_delta').length,
    items: result.newItems.map((item) => ({ type: item.type, raw: item.rawItem ?? null })),
  };
});
