// The real @libsql/client through arbor-proxy's HTTP door (proxy/px_http.h):
//   node libsql_proxy_test.mjs <libSQL URL ending with '/'> <token>
// Run by test_proxy_http (C). The packages are the ones of
// libsql_client_test.mjs (tests/hrana/package.json, locked), installed the
// same way into $ARBOR_NPM_DIR. Exit 0 = pass, 1 = fail, 77 = skipped (npm
// could not install the packages).
import assert from 'node:assert/strict';
import { npmDir, setup, suite } from '../lib/npm_client_test.mjs';

const { args, log, req } = setup({
  metaUrl: import.meta.url, tag: 'proxy-libsql', usage: 'node libsql_proxy_test.mjs <url> <token>',
  nargs: 2, dir: npmDir('ARBOR_NPM_DIR', 'arbor-npm-hrana'),
});
const [URL_, TOKEN] = args;
const { createClient, LibsqlError } = req('@libsql/client');
const tests = suite(log);
const { test } = tests;

const client = createClient({ url: URL_, authToken: TOKEN });

test('execute and batch through the proxy', async () => {
  await client.execute('CREATE TABLE IF NOT EXISTS px_items(id INTEGER PRIMARY KEY, name TEXT)');
  await client.batch([{ sql: 'INSERT INTO px_items(name) VALUES (?)', args: ['a'] },
                      { sql: 'INSERT INTO px_items(name) VALUES (?)', args: ['b'] }], 'write');
  const rs = await client.execute('SELECT count(*) AS n FROM px_items');
  assert.equal(Number(rs.rows[0].n), 2);
});

test('interactive transaction (batons) through the proxy', async () => {
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

test('a wrong token is refused', async () => {
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

const failed = await tests.run();
client.close();
process.exit(failed ? 1 : 0);
