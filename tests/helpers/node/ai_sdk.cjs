'use strict';
// The Vercel AI SDK with its default OpenAI provider: createOpenAI({baseURL, apiKey})(model), which is
// the Responses API model in @ai-sdk/openai 2+ (reported as `provider`). generateText or streamText
// (args.mode "generate" | "stream") with one tool whose execute records that it ran.
// args: model, prompt, mode, tool (name, default "get_weather"), result, maxSteps (default 1: stop after
//       the tool ran, no second request), providerOptions (e.g. {openai: {store: false}}).
const { main, versions } = require('./_common.cjs');

main(async ({ baseURL, apiKey, args }) => {
  const { generateText, streamText, tool, jsonSchema, stepCountIs } = require('ai');
  const { createOpenAI } = require('@ai-sdk/openai');
  const openai = createOpenAI({ baseURL, apiKey });
  const model = openai(args.model ?? 'fake-model');
  const name = args.tool ?? 'get_weather';
  const executed = [];
  const tools = {
    [name]: tool({
      description: 'Get the weather for a city.',
      inputSchema: jsonSchema({
        type: 'object',
        properties: { city: { type: 'string' } },
        required: ['city'],
        additionalProperties: false,
      }),
      execute: async (input, { toolCallId }) => {
        executed.push({ name, toolCallId, input });
        return args.result ?? { city: input.city, weather: 'sunny' };
      },
    }),
  };
  const options = {
    model,
    prompt: args.prompt ?? 'What is the weather in Paris?',
    tools,
    stopWhen: stepCountIs(args.maxSteps ?? 1),
    maxRetries: 0,
    ...(args.providerOptions ? { providerOptions: args.providerOptions } : {}),
  };
  let result;
  const parts = [];
  if ((args.mode ?? 'generate') === 'stream') {
    const streamed = streamText({ ...options, onError: () => {} });
    for await (const part of streamed.fullStream) {
      parts.push(part.type);
      if (part.type === 'error') throw part.error;
    }
    result = {
      text: await streamed.text,
      toolCalls: await streamed.toolCalls,
      toolResults: await streamed.toolResults,
      finishReason: await streamed.finishReason,
      steps: await streamed.steps,
      response: await streamed.response,
    };
  } else {
    result = await generateText(options);
  }
  return {
    versions: versions('ai', '@ai-sdk/openai'),
    provider: model.provider,
    text: result.text,
    tool_calls: result.toolCalls.map((c) => ({ toolCallId: c.toolCallId, toolName: c.toolName, input: c.input })),
    tool_results: result.toolResults.map((r) => ({ toolCallId: r.toolCallId, toolName: r.toolName, output: r.output })),
    executed,
    finish_reason: result.finishReason,
    steps: result.steps.length,
    parts,
    response_id: result.response?.id ?? null,
  };
});
