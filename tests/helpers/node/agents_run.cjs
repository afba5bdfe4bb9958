'use strict';
// The OpenAI Agents SDK for JS (@openai/agents) on its default model, the Responses API, with three tools,
// get_weather, run_shell and delete_repo, each appending a JSON line {name, arguments} to the file
// args.ranLog when it runs: a side effect that outlives the run, whether it ends in an answer or an error.
// args: ranLog (required), model (default "fake-model"), prompt,
//       stream (run with {stream: true} and read every event),
//       chain (run "Hello" first, then the prompt with previousResponseId: the server keeps the conversation).
const { main, openaiClient, versions } = require('./_common.cjs');

main(async (input) => {
  const fs = require('node:fs');
  const { Agent, run, tool, setDefaultOpenAIClient, setTracingDisabled } = require('@openai/agents');
  const { z } = require('zod');
  const { args } = input;
  setTracingDisabled(true);
  setDefaultOpenAIClient(openaiClient(input));
  const ran = (name, toolArgs) => fs.appendFileSync(args.ranLog, JSON.stringify({ name, arguments: toolArgs }) + '\n');
  const getWeather = tool({
    name: 'get_weather',
    description: 'The weather in a city.',
    parameters: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      ran('get_weather', { city });
      return 'sunny';
    },
  });
  const runShell = tool({
    name: 'run_shell',
    description: 'Run a shell command.',
    parameters: z.object({ command: z.string() }),
    execute: async ({ command }) => {
      ran('run_shell', { command });
      return 'done';
    },
  });
  const deleteRepo = tool({
    name: 'delete_repo',
    description: 'Delete a repository.',
    parameters: z.object({ repo: z.string() }),
    execute: async ({ repo }) => {
      ran('delete_repo', { repo });
      return 'deleted';
    },
  });
  const agent = new Agent({
    name: 'assistant',
    instructions: 'Help with the weather.',
    model: args.model ?? 'fake-model',
    tools: [getWeather, runShell, deleteRepo],
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
    final_output: result.finalOutput ?? null,
    text_deltas: events.filter((type) => type === 'output_text_delta').length,
    items: result.newItems.map((item) => ({ type: item.type, raw: item.rawItem ?? null })),
  };
});
