// The real @libsql/client through arbor-proxy's HTTP door (proxy/px_http.h):
//   node libsql_proxy_test.mjs <libSQL URL ending with '/'> <token>
// Run by test_proxy_http (C). The packages are the ones of
// libsql_client_test.mjs (tests/hrana/package.json, locked), installed the
// same way into $ARBOR_NPM_DIR. Exit 0 = pass, 1 = fail, 77 = skipped (npm
// could not install the packages).
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const [URL_, TOKEN] = process.argv.slice(2);
const NPM_DIR = process.env.ARBOR_NPM_DIR || path.join(os.tmpdir(), 'arbor-npm-hrana');
const log = (m) => console.log(`[proxy-libsql] ${m}`);

if (!URL_ || !TOKEN) {
  console.error('usage: node libsql_proxy_test.mjs <url> <token>');
  process.exit(1);
}
setTimeout(() => { console.error('FAIL: watchdog expired'); process.exit(1); }, 240000).unref();

function install() {
  const lock = fs.readFileSync(path.join(HERE, 'package-lock.json'));
  const stamp = path.join(NPM_DIR, '.lock-installed');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp).equals(lock)) return true;
  fs.mkdirSync(NPM_DIR, { recursive: true });
  fs.copyFileSync(path.join(HERE, 'package.json'), path.join(NPM_DIR, 'package.json'));
  fs.writeFileSync(path.join(NPM_DIR, 'package-lock.json'), lock);
  log(`npm ci in ${NPM_DIR}`);
  const r = spawnSync(process.env.NPM_BIN || 'npm', ['ci', '--no-audit', '--no-fund'],
                      { cwd: NPM_DIR, stdio: 'inherit', timeout: 180000 });
  if (r.status !== 0) return false;
  fs.writeFileSync(stamp, lock);
  return true;
}

if (!install()) {
  console.log('SKIP: npm ci failed (no registry access?)');
  process.exit(77);
}
const req = createRequire(path.join(NPM_DIR, 'package.json'));
const { createClient, LibsqlError } = req('@libsql/client');

let failed = false;
async function test(name, fn) {
  try {
    await fn();
    log(`ok   ${name}`);
  } catch (e) {
    failed = true;
    log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

const client = createClient({ url: URL_, authToken: TOKEN });

await test('execute and batch through the proxy', async () => {
  await client.execute('CREATE TABLE IF NOT EXISTS px_items(id INTEGER PRIMARY KEY, name TEXT)');
  await client.batch([{ sql: 'INSERT INTO px_items(name) VALUES (?)', args: ['a'] },
                      { sql: 'INSERT INTO px_items(name) VALUES (?)', args: ['b'] }], 'write');
  const rs = await client.execute('SELECT count(*) AS n FROM px_items');
  assert.equal(Number(rs.rows[0].n), 2);
});

await test('interactive transaction (batons) through the proxy', async () => {
  const tx = await client.transaction('write');
  await tx.execute({ sql: 'INSERT INTO px_items(name) VALUES (?)', args: ['tx1'] });
  const inside = await tx.execute('SELECT count(*) AS n FROM px_items');
  assert.equal(Number(inside.rows[0].n), 3, 'the transaction sees its own row');
  // Another client does not see it before the commit.
  const other = createClient({ url: URL_, authToken: TOKEN });
  const outside = await other.execute('SELECT count(*) AS n FROM px_items');
  assert.equal(Number(outside.rows[0].n), 2, 'uncommitted row invisible outside');
  await tx.execute({ sql: 'INSERT INTO px_items(name) VALUES (?)', args: ['tx2'] });
  await tx.commit();
  const after = await other.execute('SELECT count(*) AS n FROM px_items');
  assert.equal(Number(after.rows[0].n), 4);
  other.close();

  const tx2 = await client.transaction('write');
  await tx2.execute('DELETE FROM px_items');
  await tx2.rollback();
  assert.equal(Number((await client.execute('SELECT count(*) AS n FROM px_items')).rows[0].n), 4);
});

await test('a wrong token is refused', async () => {
  const bad = createClient({ url: URL_, authToken: 'arsql_wrong' });
  try {
    await bad.execute('SELECT 1');
    assert.fail('expected an error');
  } catch (e) {
    assert.ok(e instanceof LibsqlError, `not a LibsqlError: ${e}`);
    assert.match(String(e.message) + String(e.code), /401|unknown token|SERVER_ERROR/);
  }
  bad.close();
});

client.close();
process.exit(failed ? 1 : 0);
