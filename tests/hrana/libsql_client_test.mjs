// The real @libsql/client (and Drizzle ORM on top of it) against an Arbor
// compute endpoint over Hrana over HTTP. Run by test_hrana (C, harness):
//   node libsql_client_test.mjs <url>
// (and by test_cli_endpoint: node libsql_client_test.mjs <url> --smoke [token])
// The packages (tests/hrana/package.json, locked) are installed with
// `npm ci` (tests/lib/npm_client_test.mjs) into $ARBOR_NPM_DIR (default: a
// cache dir under the OS temp dir), not into the source tree. Exit 0 =
// pass, 1 = fail, 77 = skipped (npm could not install the packages, e.g.
// no network).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { npmDir, setup, suite } from '../lib/npm_client_test.mjs';

const { args, log, req } = setup({
  metaUrl: import.meta.url, tag: 'hrana-test', usage: 'node libsql_client_test.mjs <url>',
  dir: npmDir('ARBOR_NPM_DIR', 'arbor-npm-hrana'),
});
const URL_ = args[0];
const { createClient, LibsqlError } = req('@libsql/client');

async function rejects(promise, codeRe, msgRe) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof LibsqlError, `not a LibsqlError: ${e}`);
    assert.match(String(e.code), codeRe, `code of ${e.message}`);
    if (msgRe) assert.match(e.message, msgRe);
    return e;
  }
  assert.fail(`expected an error ${codeRe}`);
}

// --smoke [token]: only what a user does with the URL (and token) that
// `arbor start` prints (run by test_cli_endpoint): connect, write, read.
if (args[1] === '--smoke') {
  const c = createClient({ url: URL_, authToken: args[2] || undefined });
  await c.execute('CREATE TABLE IF NOT EXISTS smoke(x INTEGER, t TEXT)');
  await c.execute({ sql: 'INSERT INTO smoke VALUES (?, ?)', args: [41, 'from libsql'] });
  const r = await c.execute('SELECT sum(x) + 1 AS s, max(t) AS t FROM smoke');
  console.log(`smoke: ${r.rows[0].s} ${r.rows[0].t}`);
  c.close();
  process.exit(0);
}

const tests = suite(log);
const { test } = tests;
const client = createClient({ url: URL_ });
const count = async (where = '1') =>
  Number((await client.execute(`SELECT count(*) AS n FROM hr_items WHERE ${where}`)).rows[0].n);

test('execute: DDL, positional and named args, typed results', async () => {
  await client.execute(`CREATE TABLE hr_items(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                        qty INTEGER, price REAL, data BLOB)`);
  let r = await client.execute({
    sql: 'INSERT INTO hr_items(name, qty, price, data) VALUES (?, ?, ?, ?)',
    args: ['apple', 3, 1.5, new Uint8Array([0, 1, 2, 255])],
  });
  assert.equal(r.rowsAffected, 1);
  assert.equal(r.lastInsertRowid, 1n);
  r = await client.execute({
    sql: 'INSERT INTO hr_items(name, qty, price) VALUES (:name, :qty, $price)',
    args: { name: 'pear', qty: 7, price: null },
  });
  assert.equal(r.lastInsertRowid, 2n);
  r = await client.execute({ sql: 'SELECT id, name, qty, price, data FROM hr_items WHERE name = ?',
                             args: ['apple'] });
  assert.deepEqual(r.columns, ['id', 'name', 'qty', 'price', 'data']);
  assert.deepEqual(r.columnTypes, ['INTEGER', 'TEXT', 'INTEGER', 'REAL', 'BLOB']);
  assert.equal(r.rows.length, 1);
  const row = r.rows[0];
  assert.equal(row.id, 1);
  assert.equal(row.name, 'apple');
  assert.equal(row.qty, 3);
  assert.equal(row.price, 1.5);
  assert.deepEqual([...new Uint8Array(row.data)], [0, 1, 2, 255]);
  r = await client.execute({ sql: 'SELECT price FROM hr_items WHERE name = ?', args: ['pear'] });
  assert.equal(r.rows[0].price, null);
  r = await client.execute({ sql: 'UPDATE hr_items SET qty = qty + 1', args: [] });
  assert.equal(r.rowsAffected, 2);
});

test('BigInt and blob round trips', async () => {
  const big = createClient({ url: URL_, intMode: 'bigint' });
  const huge = 9007199254740993n;   // 2^53 + 1: not a double
  await big.execute({ sql: 'INSERT INTO hr_items(name, qty) VALUES (?, ?)', args: ['big', huge] });
  let r = await big.execute({ sql: 'SELECT qty, typeof(qty) AS t FROM hr_items WHERE name = ?',
                              args: ['big'] });
  assert.equal(r.rows[0].qty, huge);
  assert.equal(r.rows[0].t, 'integer');
  r = await big.execute('SELECT -9223372036854775808 AS lo, 9223372036854775807 AS hi');
  assert.equal(r.rows[0].lo, -9223372036854775808n);
  assert.equal(r.rows[0].hi, 9223372036854775807n);
  big.close();
  for (const size of [0, 1, 2, 3, 100000]) {
    const bytes = crypto.randomBytes(size);
    await client.execute({ sql: 'INSERT INTO hr_items(name, data) VALUES (?, ?)',
                           args: [`blob${size}`, bytes] });
    r = await client.execute({ sql: 'SELECT data, length(data) AS n FROM hr_items WHERE name = ?',
                               args: [`blob${size}`] });
    assert.equal(Number(r.rows[0].n), size);
    assert.ok(Buffer.from(r.rows[0].data).equals(bytes), `blob of ${size} bytes`);
  }
});

test('batch: write, read, deferred; a failing batch rolls back', async () => {
  const rs = await client.batch([
    { sql: 'INSERT INTO hr_items(name, qty) VALUES (?, ?)', args: ['b1', 1] },
    { sql: 'INSERT INTO hr_items(name, qty) VALUES (?, ?)', args: ['b2', 2] },
    'SELECT count(*) AS n FROM hr_items WHERE name LIKE \'b_\'',
  ], 'write');
  assert.equal(rs.length, 3);
  assert.equal(rs[1].rowsAffected, 1);
  assert.equal(Number(rs[2].rows[0].n), 2);
  const before = await count();
  const e = await rejects(client.batch([
    { sql: 'INSERT INTO hr_items(name) VALUES (?)', args: ['b3'] },
    { sql: 'INSERT INTO hr_items(name) VALUES (?)', args: ['b1'] },   // UNIQUE
  ], 'write'), /^SQLITE_CONSTRAINT/, /UNIQUE/);
  assert.equal(e.statementIndex ?? 1, 1);
  assert.equal(await count(), before, 'the failed batch left nothing');
  const rd = await client.batch(['SELECT count(*) AS n FROM hr_items', 'SELECT 1 AS one'], 'read');
  assert.equal(Number(rd[0].rows[0].n), before);
  await rejects(client.batch(['INSERT INTO hr_items(name) VALUES (\'nope\')'], 'read'),
                /^SQLITE_READONLY/);
  assert.equal(await count('name = \'nope\''), 0);
  const df = await client.batch([
    { sql: 'INSERT INTO hr_items(name) VALUES (?)', args: ['d1'] },
    'SELECT name FROM hr_items WHERE name = \'d1\'',
  ], 'deferred');
  assert.equal(df[1].rows[0].name, 'd1');
});

test('interactive transactions: commit, rollback, read', async () => {
  const tx = await client.transaction('write');
  await tx.execute({ sql: 'INSERT INTO hr_items(name, qty) VALUES (?, ?)', args: ['t1', 10] });
  const inside = await tx.execute('SELECT qty FROM hr_items WHERE name = \'t1\'');
  assert.equal(inside.rows[0].qty, 10);
  await tx.commit();
  assert.equal(await count('name = \'t1\''), 1);

  const tx2 = await client.transaction('write');
  await tx2.execute({ sql: 'INSERT INTO hr_items(name) VALUES (?)', args: ['t2'] });
  await tx2.batch(['UPDATE hr_items SET qty = 0 WHERE name = \'t1\'']);
  await tx2.rollback();
  assert.equal(await count('name = \'t2\''), 0);
  assert.equal(await count('name = \'t1\' AND qty = 10'), 1);

  const tx3 = await client.transaction('read');
  assert.equal(Number((await tx3.execute('SELECT count(*) AS n FROM hr_items')).rows[0].n),
               await count());
  await rejects(tx3.execute('DELETE FROM hr_items'), /^SQLITE_READONLY/);
  tx3.close();
  // After the read-only transaction, the same client writes again.
  await client.execute('UPDATE hr_items SET qty = 11 WHERE name = \'t1\'');
  assert.equal(await count('qty = 11'), 1);
});

test('errors surface as LibsqlError with SQLite codes', async () => {
  await rejects(client.execute('SELECT * FROM no_such_table'), /^SQLITE_ERROR$/,
                /no such table/);
  await rejects(client.execute('SELEC 1'), /^SQLITE_ERROR$/, /syntax error/);
  await rejects(client.execute({ sql: 'INSERT INTO hr_items(name) VALUES (?)', args: ['apple'] }),
                /^SQLITE_CONSTRAINT/, /UNIQUE constraint failed/);
  await rejects(client.execute({ sql: 'INSERT INTO hr_items(id, name) VALUES (?, NULL)',
                                 args: [999] }), /^SQLITE_CONSTRAINT/, /NOT NULL/);
  await rejects(client.execute({ sql: 'SELECT ?, ?', args: [1] }), /ARGS_INVALID/);
});

test('executeMultiple', async () => {
  await client.executeMultiple(`CREATE TABLE hr_multi(x);
                                INSERT INTO hr_multi VALUES (1);
                                INSERT INTO hr_multi VALUES (2);`);
  const r = await client.execute('SELECT sum(x) AS s FROM hr_multi');
  assert.equal(Number(r.rows[0].s), 3);
});

test('Drizzle ORM on @libsql/client', async () => {
  const { drizzle } = req('drizzle-orm/libsql');
  const { sqliteTable, integer, text } = req('drizzle-orm/sqlite-core');
  const { eq, sql } = req('drizzle-orm');
  const users = sqliteTable('hr_users', {
    id: integer('id').primaryKey({ autoIncrement: true }),
    name: text('name').notNull(),
    age: integer('age'),
  });
  const db = drizzle(client);
  await db.run(sql`CREATE TABLE hr_users(id INTEGER PRIMARY KEY AUTOINCREMENT,
                                        name TEXT NOT NULL, age INTEGER)`);
  await db.insert(users).values([{ name: 'ada', age: 36 }, { name: 'alan', age: 41 }]);
  const found = await db.select().from(users).where(eq(users.name, 'alan'));
  assert.deepEqual(found, [{ id: 2, name: 'alan', age: 41 }]);
  await db.update(users).set({ age: 42 }).where(eq(users.id, 2));
  await db.transaction(async (t) => {
    await t.insert(users).values({ name: 'grace', age: 85 });
    t.rollback();
  }).catch(() => {});
  const all = await db.select({ name: users.name, age: users.age }).from(users).orderBy(users.id);
  assert.deepEqual(all, [{ name: 'ada', age: 36 }, { name: 'alan', age: 42 }]);
  await db.transaction(async (t) => {
    await t.insert(users).values({ name: 'grace', age: 85 });
  });
  assert.equal((await db.select().from(users)).length, 3);
});

const failed = await tests.run();
client.close();
log(failed ? `${failed} of ${tests.count} failed` : `all ${tests.count} passed`);
process.exit(failed ? 1 : 0);
