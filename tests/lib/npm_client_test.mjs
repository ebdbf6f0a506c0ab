// What the Node client tests run by the C harnesses share
// (tests/hrana/libsql_client_test.mjs, tests/hrana/libsql_proxy_test.mjs,
// tests/node_pg/node_pg_test.mjs): the argument check, the watchdog, the
// `npm ci` of the script folder's locked packages into a cache dir outside
// the source tree, and the test loop.
//
// Only Node built-ins are imported here. The npm packages are resolved by
// the `req` that setup() returns, anchored in the cache dir, never from
// tests/lib, so this module needs nothing installed next to it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const WATCHDOG_MS = 240000;
export const NPM_CI_TIMEOUT_MS = 180000;

// The cache dir for a script's packages: $envVar, else <OS temp dir>/name.
export function npmDir(envVar, name) {
  return process.env[envVar] || path.join(os.tmpdir(), name);
}

// Installs the locked packages of folder `here` (package.json,
// package-lock.json) into `dir` with `npm ci`, unless the same lock is
// there already. Returns false when npm fails.
export function npmInstall(here, dir, log) {
  const lock = fs.readFileSync(path.join(here, 'package-lock.json'));
  const stamp = path.join(dir, '.lock-installed');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp).equals(lock)) return true;
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(here, 'package.json'), path.join(dir, 'package.json'));
  fs.writeFileSync(path.join(dir, 'package-lock.json'), lock);
  log(`npm ci in ${dir}`);
  const r = spawnSync(process.env.NPM_BIN || 'npm', ['ci', '--no-audit', '--no-fund'],
                      { cwd: dir, stdio: 'inherit', timeout: NPM_CI_TIMEOUT_MS });
  if (r.status !== 0) return false;
  fs.writeFileSync(stamp, lock);
  return true;
}

// The start of every such script:
//   - exit 1 with "usage: <usage>" unless the first `nargs` command-line
//     arguments are there and not empty;
//   - a watchdog (WATCHDOG_MS) that fails the run;
//   - npmInstall() of the packages locked next to the script (metaUrl: its
//     import.meta.url) into `dir`; "SKIP" and exit 77 when that fails.
// Returns { args (the command-line arguments), log (prints "[tag] ..."),
// req (a require that resolves from `dir`) }.
export function setup({ metaUrl, tag, usage, nargs = 1, dir }) {
  const log = (m) => console.log(`[${tag}] ${m}`);
  const args = process.argv.slice(2);
  for (let i = 0; i < nargs; i++) {
    if (!args[i]) {
      console.error(`usage: ${usage}`);
      process.exit(1);
    }
  }
  setTimeout(() => { console.error('FAIL: watchdog expired'); process.exit(1); },
             WATCHDOG_MS).unref();
  if (!npmInstall(path.dirname(fileURLToPath(metaUrl)), dir, log)) {
    console.log('SKIP: npm ci failed (no registry access?)');
    process.exit(77);
  }
  return { args, log, req: createRequire(path.join(dir, 'package.json')) };
}

// Named async tests, run one after the other in the order given:
//   const s = suite(log); s.test('name', async () => { ... });
//   const failed = await s.run();   // the number that threw
export function suite(log) {
  const tests = [];
  return {
    test: (name, fn) => { tests.push([name, fn]); },
    get count() { return tests.length; },
    async run() {
      let failed = 0;
      for (const [name, fn] of tests) {
        try {
          await fn();
          log(`ok   ${name}`);
        } catch (e) {
          failed++;
          log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
        }
      }
      return failed;
    },
  };
}
