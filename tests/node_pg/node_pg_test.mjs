// node-postgres (`pg` from npm) against an Arbor compute's PostgreSQL
// endpoint. Run by test_pgw_node (C, harness):
//   node node_pg_test.mjs <postgres URL>
// The package (tests/node_pg/package.json, locked) is installed with
// `npm ci` (tests/lib/npm_client_test.mjs) into $ARBOR_NPM_DIR_PG (default: a
// cache dir under the OS temp dir), not into the source tree. Exit 0 =
// pass, 1 = fail, 77 = skipped (npm could not install the package, e.g.
// no network).
import assert from 'node:assert/strict';
import { npmDir, setup, suite } from '../lib/npm_client_test.mjs';

const { args, log, req } = setup({
  metaUrl: import.meta.url, tag: 'node-pg-test', usage: 'node node_pg_test.mjs <postgres URL>',
  dir: npmDir('ARBOR_NPM_DIR_PG', 'arbor-npm-node-pg'),
});
const URL_ = args[0];
const pg = req('pg');

const tests = suite(log);
const { test } = tests;
const client = new pg.Client({ connectionString: URL_ });

async function rejects(promise, code, msgRe) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof pg.DatabaseError, `not a pg DatabaseError: ${e}`);
    assert.equal(e.code, code, `SQLSTATE of ${e.message}`);
    if (msgRe) assert.match(e.message, msgRe);
    return e;
  }
  assert.fail(`expected an error ${code}`);
}

test('parameters and types', async () => {
  await client.query('DROP TABLE IF EXISTS np_items');
  await client.query(`CREATE TABLE np_items(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                      qty INTEGER, big BIGINT, price REAL, ok BOOLEAN, data BLOB)`);
  let r = await client.query(
    'INSERT INTO np_items(name, qty, big, price, ok, data) VALUES ($1, $2, $3, $4, $5, $6)',
    ['apple', 3, '9007199254740993', 1.5, 1, Buffer.from([0, 1, 2, 255])]);
  assert.equal(r.rowCount, 1);
  assert.equal(r.command, 'INSERT');
  r = await client.query(
    'INSERT INTO np_items(name, qty, big, price, ok, data) VALUES ($1, $2, $3, $4, $5, $6)',
    ['pear', null, -1, null, 0, null]);
  assert.equal(r.rowCount, 1);
  r = await client.query('SELECT id, name, qty, big, price, ok, data FROM np_items WHERE name = $1',
                         ['apple']);
  assert.deepEqual(r.fields.map((f) => f.name), ['id', 'name', 'qty', 'big', 'price', 'ok', 'data']);
  assert.equal(r.rows.length, 1);
  const row = r.rows[0];
  // INTEGER columns are int8 (SQLite's integers are 64-bit): node-postgres
  // gives int8 as a string, as it does for PostgreSQL's bigint.
  assert.equal(row.id, '1');
  assert.equal(row.name, 'apple');
  assert.equal(row.qty, '3');
  assert.equal(row.big, '9007199254740993');   // beyond a double: exact
  assert.equal(row.price, 1.5);
  // BOOLEAN columns are bool on the wire; SQLite stores 1/0 (pass 1/0:
  // node-postgres sends JS true/false as the untyped text 'true'/'false',
  // which a BOOLEAN column, NUMERIC affinity, keeps as text)
  assert.equal(row.ok, true);
  assert.ok(Buffer.isBuffer(row.data), `data is ${typeof row.data}`);
  assert.deepEqual([...row.data], [0, 1, 2, 255]);
  r = await client.query('SELECT qty, big, price, ok, data FROM np_items WHERE name = $1', ['pear']);
  assert.deepEqual(r.rows[0], { qty: null, big: '-1', price: null, ok: false, data: null });
  r = await client.query('SELECT $1::int + 1 AS n, $2 || \'!\' AS s, length($3) AS l',
                         [41, 'hi', 'abc']);
  assert.equal(Number(r.rows[0].n), 42);
  assert.equal(r.rows[0].s, 'hi!');
  assert.equal(Number(r.rows[0].l), 3);
  r = await client.query('SELECT typeof(ok) AS t FROM np_items ORDER BY id');
  assert.deepEqual(r.rows.map((x) => x.t), ['integer', 'integer']);
  r = await client.query('UPDATE np_items SET qty = coalesce(qty, 0) + $1', [1]);
  assert.equal(r.rowCount, 2);
  assert.equal(r.command, 'UPDATE');
  // the same prepared statement, named, many times
  for (let i = 0; i < 5; i++) {
    r = await client.query({ name: 'by_name', text: 'SELECT count(*) AS n FROM np_items WHERE name <> $1',
                             values: [`x${i}`] });
    assert.equal(Number(r.rows[0].n), 2);
  }
});

test('transactions: commit and rollback', async () => {
  const n = async () => Number((await client.query('SELECT count(*) AS n FROM np_items')).rows[0].n);
  await client.query('BEGIN');
  await client.query('INSERT INTO np_items(name) VALUES ($1)', ['kept']);
  await client.query('COMMIT');
  assert.equal(await n(), 3);
  await client.query('BEGIN');
  await client.query('INSERT INTO np_items(name) VALUES ($1)', ['gone']);
  assert.equal(await n(), 4);
  await client.query('ROLLBACK');
  assert.equal(await n(), 3);
  // an error inside a transaction, then rollback: nothing of it stays
  await client.query('BEGIN');
  await client.query('INSERT INTO np_items(name) VALUES ($1)', ['also gone']);
  await rejects(client.query('INSERT INTO np_items(name) VALUES ($1)', ['kept']), '23505');
  await client.query('ROLLBACK');
  assert.equal(await n(), 3);
});

test('errors: SQLSTATE and message; the connection stays usable', async () => {
  await rejects(client.query('SELEC 1'), '42601', /syntax error/);
  await rejects(client.query('SELECT * FROM np_nope'), '42P01', /no such table: np_nope/);
  await rejects(client.query('INSERT INTO np_items(name) VALUES ($1)', ['apple']), '23505',
                /UNIQUE constraint failed: np_items.name/);
  await rejects(client.query('INSERT INTO np_items(name) VALUES ($1)', [null]), '23502',
                /NOT NULL constraint failed/);
  const r = await client.query('SELECT 1 + 1 AS two');
  assert.equal(Number(r.rows[0].two), 2);
});

test('a pool of connections', async () => {
  const pool = new pg.Pool({ connectionString: URL_, max: 3 });
  const rs = await Promise.all([1, 2, 3, 4, 5, 6].map((i) =>
    pool.query('SELECT $1::int * 2 AS d', [i])));
  assert.deepEqual(rs.map((r) => Number(r.rows[0].d)), [2, 4, 6, 8, 10, 12]);
  await pool.end();
});

let failed = 0;
try {
  await client.connect();
  failed = await tests.run();
} catch (e) {
  failed++;
  console.log(`FAIL: connect: ${e.stack || e}`);
} finally {
  await client.end().catch(() => {});
}
log(failed ? `${failed} failed` : 'all passed');
process.exit(failed ? 1 : 0);
