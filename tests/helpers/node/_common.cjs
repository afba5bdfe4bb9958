'use strict';
// Shared by every script: read {baseURL, apiKey, args} as JSON on stdin, run, print one JSON line.
// A client-side error (an API error the client raised) is reported as {ok: false, error}; only a crash
// of the script itself exits non-zero, so tests.helpers.node can tell the two apart.

function describeError(error) {
  if (error == null || typeof error !== 'object') return { name: typeof error, message: String(error) };
  return {
    name: error.constructor?.name ?? 'Error',
    message: String(error.message ?? error),
    status: error.status ?? error.statusCode ?? null,
    code: error.code ?? null,
    type: error.type ?? null,
    param: error.param ?? null,
    body: error.error ?? error.responseBody ?? null,
    cause: error.cause ? describeError(error.cause) : null,
    stack: typeof error.stack === 'string' ? error.stack.split('\n').slice(0, 8).join('\n') : null,
  };
}

let finished = false;
function finish(result) {
  if (finished) return;
  finished = true;
  // Pipes are synchronous on Linux, but exit only once the line is flushed anyway; keep-alive sockets
  // would otherwise hold the process open.
  process.stdout.write('\n' + JSON.stringify(result) + '\n', () => process.exit(0));
}

async function readInput() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  const input = text.trim() ? JSON.parse(text) : {};
  return { baseURL: input.baseURL, apiKey: input.apiKey ?? 'sk-test', args: input.args ?? {} };
}

function main(run) {
  process.on('unhandledRejection', (error) => finish({ ok: false, error: describeError(error), unhandled: true }));
  readInput()
    .then(run)
    .then((result) => finish({ ok: true, ...result }))
    .catch((error) => finish({ ok: false, error: describeError(error) }));
}

function openaiClient({ baseURL, apiKey, args }) {
  const OpenAI = require('openai');
  return new OpenAI({ baseURL, apiKey, maxRetries: args.maxRetries ?? 0, timeout: args.timeoutMs ?? 30000 });
}

// The installed version of a package; read from its package.json, which "exports" may not expose to require.
function packageVersion(name) {
  const fs = require('node:fs');
  const path = require('node:path');
  let dir = path.dirname(require.resolve(name));
  while (dir !== path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (manifest.name === name) return manifest.version;
    }
    dir = path.dirname(dir);
  }
  return null;
}

const versions = (...names) => Object.fromEntries([['node', process.version], ...['openai', ...names].map((n) => [n, packageVersion(n)])]);

module.exports = { describeError, finish, main, openaiClient, packageVersion, versions };
