// Runs a command against a real S3-compatible server: s3rver (from npm,
// installed at test time into $S3RVER_CACHE by `npm ci` from this folder's
// package-lock.json, then reused), listening on an ephemeral loopback port
// with a fresh temp directory and one bucket "arbor-test".
//
//   node s3rver_run.mjs CMD ARGS...
//
// CMD runs with ARBOR_S3_URL=s3://arbor-test/<random prefix>?endpoint=
// http://127.0.0.1:PORT&region=us-east-1, ARBOR_S3_ENDPOINT and dummy
// AWS credentials (s3rver accepts any). Exit status: CMD's; 77 (skipped)
// when npm is missing or the install fails (no registry reachable), with
// the reason printed. s3rver and its directory are removed at the end, also
// on failure; a watchdog bounds the run.
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// s3rver's ListObjectsV2 continuation tokens use DES, which Node 20's
// OpenSSL 3 only offers through the legacy provider.
if (!process.execArgv.includes('--openssl-legacy-provider')) {
  const r = spawnSync(process.execPath,
                      ['--openssl-legacy-provider', ...process.argv.slice(1)],
                      { stdio: 'inherit' });
  process.exit(r.status === null ? 1 : r.status);
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CACHE = process.env.S3RVER_CACHE ? path.resolve(process.env.S3RVER_CACHE) : path.join(os.tmpdir(), 'arbor-s3rver-cache');
const WATCHDOG_MS = Number(process.env.S3RVER_WATCHDOG_MS || 600000);
const log = (m) => console.log(`[s3rver-run] ${m}`);

function skip(reason) {
  console.log(`SKIP: ${reason}`);
  process.exit(77);
}

function ensureS3rver() {
  const mod = path.join(CACHE, 'node_modules', 's3rver');
  const lock = fs.readFileSync(path.join(HERE, 'package-lock.json'));
  const stamp = path.join(CACHE, '.lock-copy');
  if (fs.existsSync(mod) && fs.existsSync(stamp) && fs.readFileSync(stamp).equals(lock)) {
    return mod;
  }
  const npm = process.env.NPM_BIN || 'npm';
  if (spawnSync(npm, ['--version'], { encoding: 'utf8' }).status !== 0) {
    skip('npm is not installed (scripts/deps.sh installs nodejs and npm)');
  }
  fs.mkdirSync(CACHE, { recursive: true });
  fs.copyFileSync(path.join(HERE, 'package.json'), path.join(CACHE, 'package.json'));
  fs.copyFileSync(path.join(HERE, 'package-lock.json'), path.join(CACHE, 'package-lock.json'));
  log(`npm ci (s3rver) in ${CACHE}`);
  const r = spawnSync(npm, ['ci', '--no-audit', '--no-fund'],
                      { cwd: CACHE, stdio: 'inherit', timeout: 240000 });
  if (r.status !== 0) skip('npm ci of s3rver failed (is the npm registry reachable?)');
  fs.writeFileSync(stamp, lock);
  return mod;
}

const cmd = process.argv.slice(2);
if (cmd.length === 0) {
  console.error('usage: s3rver_run.mjs CMD ARGS...');
  process.exit(2);
}
const modDir = ensureS3rver();
const { default: S3rver } = await import(pathToFileURL(path.join(modDir, 'lib', 's3rver.js')).href);
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'arbor-s3rver-'));
const server = new S3rver({
  address: '127.0.0.1', port: 0, silent: !process.env.S3RVER_VERBOSE, directory: dataDir,
  configureBuckets: [{ name: 'arbor-test' }],
});
const addr = await server.run();
const endpoint = `http://127.0.0.1:${addr.port}`;
const prefix = `t-${crypto.randomBytes(4).toString('hex')}`;
log(`s3rver on ${endpoint}, data in ${dataDir}`);

let child = null;
let done = false;
async function finish(code) {
  if (done) return;
  done = true;
  if (child && child.exitCode === null) child.kill('SIGKILL');
  await server.close().catch(() => {});
  fs.rmSync(dataDir, { recursive: true, force: true });
  process.exit(code);
}
const watchdog = setTimeout(() => { console.error('FAIL: watchdog expired'); finish(1); },
                            WATCHDOG_MS);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => finish(1));

child = spawn(cmd[0], cmd.slice(1), {
  stdio: 'inherit',
  env: {
    ...process.env,
    ARBOR_S3_URL: `s3://arbor-test/${prefix}?endpoint=${endpoint}&region=us-east-1`,
    ARBOR_S3_ENDPOINT: endpoint,
    ARBOR_S3_DATA_DIR: dataDir,
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
  },
});
child.on('error', (e) => { console.error(`FAIL: ${e.message}`); finish(1); });
child.on('exit', (code, signal) => {
  clearTimeout(watchdog);
  if (signal) console.error(`command killed by ${signal}`);
  finish(code === null ? 1 : code);
});
