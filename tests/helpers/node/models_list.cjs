'use strict';
// openai-node's client.models.list(): every model id, across pages, as an app lists them.
const { main, openaiClient, versions } = require('./_common.cjs');

main(async (input) => {
  const ids = [];
  for await (const model of openaiClient(input).models.list()) ids.push(model.id);
  return { versions: versions(), ids };
});
