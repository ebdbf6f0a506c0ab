// The web dashboard in headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core), against a real local cluster:
//   - `arbor start` in a temp dir (ephemeral ports), an endpoint on main if
//     the CLI has `arbor endpoint` and start did not make one, a branch dev,
//     a little SQL;
//   - the dashboard (`arbor dashboard` if the command is registered, else the
//     arbor_dashboard_serve test binary: the same cli_dashboard_run);
//   - the page shows every component up, the branch tree (main -> dev with
//     its ancestor LSN), the usage table and the charts;
//   - kill -9 of one safekeeper (pid from arbor status): the page shows it
//     down within a few seconds;
//   - a screenshot is saved in $ARBOR_ARTIFACT_DIR (path printed).
// Everything it started is stopped at the end, also on failure; a watchdog
// bounds the run. Exit 0 = pass, 1 = fail, 77 = skipped (no Chromium).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARBOR = process.env.ARBOR_CLI_BIN;
const DASH_BIN = process.env.ARBOR_DASHBOARD_BIN;
const ART = process.env.ARBOR_ARTIFACT_DIR || os.tmpdir();
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const WATCHDOG_MS = 240000;

if (!ARBOR || !fs.existsSync(ARBOR)) {
  console.error('ARBOR_CLI_BIN must name the arbor binary');
  process.exit(1);
}
if (!fs.existsSync(CHROMIUM)) {
  console.log(`SKIP: ${CHROMIUM} is not installed (scripts/deps.sh installs chromium)`);
  process.exit(77);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arbor-dash-'));
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'arbor-chromium-'));
let dashProc = null;
let browser = null;
let page = null;
let cleaned = false;

function log(msg) { console.log(`[dashboard-test] ${msg}`); }

function arbor(args, { check = true, timeout = 120000 } = {}) {
  const r = spawnSync(ARBOR, ['--dir', dir, ...args], { encoding: 'utf8', timeout });
  if (check && r.status !== 0) {
    throw new Error(`arbor ${args.join(' ')} -> ${r.status}\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

// Synchronous on purpose: also runs from 'exit' and signal handlers.
function cleanup() {
  if (cleaned) return;
  cleaned = true;
  try { if (dashProc && dashProc.exitCode === null) dashProc.kill('SIGKILL'); } catch { /* gone */ }
  spawnSync(ARBOR, ['--dir', dir, 'stop', '--timeout', '5'], { timeout: 60000 });
  if (!process.env.ARBOR_KEEP_TMP) {
    fs.rmSync(dir, { recursive: true, force: true });
  } else {
    log(`kept ${dir}`);
  }
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { cleanup(); process.exit(1); });
}
const watchdog = setTimeout(() => {
  console.error('FAIL: watchdog expired');
  cleanup();
  process.exit(1);
}, WATCHDOG_MS);

function ensurePlaywright() {
  if (fs.existsSync(path.join(HERE, 'node_modules', 'playwright-core'))) return;
  log('npm ci (playwright-core) in tests/dashboard');
  const r = spawnSync(process.env.NPM_BIN || 'npm', ['ci', '--no-audit', '--no-fund'],
                      { cwd: HERE, stdio: 'inherit', timeout: 180000 });
  if (r.status !== 0) throw new Error('npm ci failed');
}

// Every component with its pid: the daemons (cluster.json) and the local
// endpoints (arbor-control keeps their state), as `arbor status --json`
// gives them (its exit status says whether all are up: not asked here).
function state() {
  return JSON.parse(arbor(['status', '--json'], { check: false }).stdout);
}

function hasCommand(words) {
  const r = spawnSync(ARBOR, [...words, '--help'], { encoding: 'utf8', timeout: 10000 });
  return r.status === 0;
}

async function startDashboard() {
  const viaCli = hasCommand(['dashboard']);
  const [bin, args] = viaCli
    ? [ARBOR, ['--dir', dir, 'dashboard', '--port', '0', '--open-browser', 'no']]
    : [DASH_BIN, ['--dir', dir, '--port', '0']];
  log(`dashboard: ${viaCli ? 'arbor dashboard' : 'arbor_dashboard_serve'}`);
  dashProc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  dashProc.stderr.on('data', (d) => process.stderr.write(d));
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`dashboard did not start: ${out}`)), 20000);
    dashProc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) { clearTimeout(t); resolve(m[0]); }
    });
    dashProc.on('exit', (code) => reject(new Error(`dashboard exited ${code}: ${out}`)));
  });
}

function expect(cond, msg) {
  if (!cond) throw new Error(`expectation failed: ${msg}`);
  log(`ok: ${msg}`);
}

async function pollDom(fn, arg, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await page.evaluate(fn, arg);
    if (last && last.ok) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`);
}

async function main() {
  ensurePlaywright();
  const { chromium } = await import('playwright-core');

  log(`cluster in ${dir}`);
  arbor(['start', '--base-port', '0']);
  let st = state();
  let compute = st.components.find((c) => c.kind === 'compute');
  if (!compute && hasCommand(['endpoint', 'start'])) {
    arbor(['endpoint', 'start', 'main']);
    st = state();
    compute = st.components.find((c) => c.kind === 'compute');
  }
  log(compute ? `endpoint ${compute.name} on main` : 'no endpoint command yet: skipping the endpoint');
  if (compute && hasCommand(['sql'])) {
    arbor(['sql', 'main', 'CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)']);
    for (let i = 0; i < 5; i++) arbor(['sql', 'main', `INSERT INTO kv(v) VALUES ('v${i}')`]);
    arbor(['sql', 'main', 'SELECT count(*) FROM kv']);
  }
  arbor(['branch', 'create', 'dev']);

  const url = await startDashboard();
  log(`dashboard at ${url}`);
  // A persistent context is how playwright takes a fresh --user-data-dir.
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1300 },
    timeout: 60000,
  });
  page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(url, { timeout: 20000 });
  await page.waitForSelector('body[data-ready="yes"]', { timeout: 15000 });

  // Every component of the state file is shown, and up.
  const names = st.components.map((c) => c.name);
  const health = await pollDom((ns) => {
    const cards = ns.map((n) => document.querySelector(`.comp[data-name="${n}"]`));
    const states = cards.map((c) => (c ? c.dataset.state : 'missing'));
    return { ok: states.every((s) => s === 'up'), states };
  }, names, 10000, 'every component up');
  expect(health.ok, `all ${names.length} components shown up (${names.join(', ')})`);

  // The branch tree: main, and dev as its child with the ancestor LSN.
  const tree = await pollDom(() => {
    const main = document.querySelector('#tree g.branch[data-branch="main"]');
    const dev = document.querySelector('#tree g.branch[data-branch="dev"]');
    const devText = dev ? dev.textContent : '';
    return { ok: !!main && !!dev && /from main@[0-9A-F]+\/[0-9A-F]+/.test(devText) &&
                 /logical/.test(devText),
             devText };
  }, null, 10000, 'the branch tree');
  expect(tree.ok, `branch tree: main -> dev (${tree.devText.slice(0, 90)}…)`);

  // One card per daemon (totals, not a line per timeline), and the
  // searchable branch table: "dev" leaves dev's row (main stays in the tree
  // as its ancestor); a name nobody has leaves none.
  const cards = await pollDom(() => {
    const sk = document.querySelector('.comp[data-kind="safekeeper"]');
    const ps = document.querySelector('.comp[data-kind="pageserver"]');
    const t = (c) => (c ? c.textContent : '');
    return { ok: /timelines\s*[0-9]/.test(t(sk)) && /timelines\s*[0-9]/.test(t(ps)) &&
                 /main commit/.test(t(sk)) && !/dev commit/.test(t(sk)),
             text: t(sk).slice(0, 160) };
  }, null, 10000, 'daemon cards with totals');
  expect(cards.ok, `safekeeper card: ${cards.text}`);
  await page.fill('#branch-search', 'dev');
  const search = await pollDom(() => {
    const rows = [...document.querySelectorAll('#branches tbody tr[data-branch]')]
      .map((r) => r.dataset.branch);
    const inTree = [...document.querySelectorAll('#tree g.branch')].map((g) => g.dataset.branch);
    const n = document.querySelector('#branch-count').textContent;
    return { ok: rows.length === 1 && rows[0] === 'dev' && inTree.includes('main') &&
                 inTree.includes('dev') && /1 match/.test(n),
             rows, inTree, n };
  }, null, 10000, 'the branch search');
  expect(search.ok, `search "dev": table ${search.rows.join(',')}; tree ${search.inTree.join(',')}` +
                    ` (${search.n})`);
  await page.fill('#branch-search', 'nosuchbranch');
  const none = await pollDom(() => {
    const rows = document.querySelectorAll('#branches tbody tr[data-branch]').length;
    const empty = document.querySelector('#branches tbody tr.empty');
    return { ok: rows === 0 && !!empty && /no branch matches/.test(empty.textContent), rows };
  }, null, 10000, 'a search without hits');
  expect(none.ok, 'search without hits: an empty table that says so');
  await page.fill('#branch-search', '');

  // Charts exist; usage has the endpoint's row when there is one.
  const charts = await page.evaluate(() => document.querySelectorAll('.charts svg').length);
  expect(charts === 4, '4 live charts');
  if (compute) {
    const usage = await pollDom((name) => {
      const row = document.querySelector(`#usage tr[data-endpoint="${name}"]`);
      const cells = row ? [...row.cells].map((c) => c.textContent) : [];
      return { ok: !!row && cells[2] === 'up' && Number(cells[3].replace(/,/g, '')) > 0, cells };
    }, compute.name, 10000, 'the usage row');
    expect(usage.ok, `usage row of ${compute.name}: ${usage.cells.join(' | ')}`);
  }

  // The control plane's section (arbor-control's API, when `arbor start` ran it).
  if (fs.existsSync(path.join(dir, 'api.json'))) {
    const ctl = await pollDom(() => {
      const s = document.querySelector('#control-summary');
      return { ok: !!s && /active, wakes \d+.*, pool \d+ ready/.test(s.textContent),
               text: s ? s.textContent : '' };
    }, null, 10000, 'the serverless section');
    expect(ctl.ok, `serverless endpoints: ${ctl.text}`);
    // Webhooks (arbor-control's API): one added now shows as a row.
    if (hasCommand(['webhook', 'list'])) {
      arbor(['webhook', 'add', 'main', 'http://127.0.0.1:9/dashboard-test']);
      const wh = await pollDom(() => {
        const s = document.querySelector('#webhooks-summary');
        const row = document.querySelector('#webhooks tr[data-webhook]');
        const cells = row ? [...row.cells].map((c) => c.textContent) : [];
        return { ok: !!s && /\d+ webhooks/.test(s.textContent) && cells[1] === 'main' &&
                     /dashboard-test/.test(cells[7] || ''), text: cells.join(' | ') };
      }, null, 10000, 'the webhooks section');
      expect(wh.ok, `webhooks: ${wh.text}`);
    }
    // arbor-proxy's section (its /metrics): both doors' rows.
    const px = await pollDom(() => {
      const s = document.querySelector('#proxy-summary');
      const rows = document.querySelectorAll('#proxy tr[data-door]').length;
      return { ok: !!s && /PostgreSQL sessions open/.test(s.textContent) && rows === 2,
               text: s ? s.textContent : '' };
    }, null, 10000, 'the proxy section');
    expect(px.ok, `proxy: ${px.text}`);
  }

  // Commits while the page watches: the live charts move.
  if (compute && hasCommand(['sql'])) {
    for (let i = 0; i < 8; i++) {
      arbor(['sql', 'main', `INSERT INTO kv(v) VALUES (hex(randomblob(500)))`]);
      await new Promise((r) => setTimeout(r, 300));
    }
    const moved = await pollDom(async () => {
      const h = await (await fetch('/api/metrics/history')).json();
      const busy = h.samples.filter((x) => x.commits_per_s > 0 && x.commit_p99_ms !== null);
      const legend = document.querySelector('#chart-throughput .legend');
      return { ok: busy.length > 0, samples: h.samples.length, busy: busy.length,
               legend: legend ? legend.textContent : '' };
    }, null, 8000, 'commits in the live history');
    expect(moved.ok, `live history: ${moved.busy} of ${moved.samples} samples with commits`);
  }

  // kill -9 one safekeeper: the page says so within a few seconds.
  const victim = st.components.find((c) => c.name === 'sk2') ||
                 st.components.find((c) => c.kind === 'safekeeper');
  process.kill(victim.pid, 'SIGKILL');
  const t0 = Date.now();
  const down = await pollDom((n) => {
    const card = document.querySelector(`.comp[data-name="${n}"]`);
    const word = card ? card.querySelector('.state').textContent : '';
    const color = card ? getComputedStyle(card.querySelector('.state')).backgroundColor : '';
    return { ok: !!card && card.dataset.state === 'down' && word === 'down', word, color,
             summary: document.querySelector('#summary').textContent };
  }, victim.name, 8000, `${victim.name} shown down`);
  expect(down.ok, `${victim.name} shown "down" ${Date.now() - t0} ms after kill -9 ` +
                  `(badge ${down.color}; header: ${down.summary})`);
  expect(/rgb\(220, 38, 38\)/.test(down.color), 'the down badge is red');
  const others = await page.evaluate((n) => [...document.querySelectorAll('.comp')]
    .filter((c) => c.dataset.name !== n).map((c) => c.dataset.state), victim.name);
  expect(others.every((s) => s === 'up'), 'the other components stay up');
  await new Promise((r) => setTimeout(r, 1600));   // one more refresh for the charts

  fs.mkdirSync(ART, { recursive: true });
  const shot = path.join(ART, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  log(`screenshot: ${shot}`);
  expect(errors.length === 0, `no errors in the page's console (${errors.join('; ')})`);

  // SIGTERM: the dashboard stops cleanly (exit 0; under ASan: no leak).
  const code = await new Promise((resolve) => {
    const t = setTimeout(() => resolve('timeout'), 15000);
    dashProc.removeAllListeners('exit');
    dashProc.on('exit', (c, sig) => { clearTimeout(t); resolve(c === null ? sig : c); });
    dashProc.kill('SIGTERM');
  });
  expect(code === 0, `the dashboard exits 0 on SIGTERM (got ${code})`);
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.stack || e}`);
  if (page) {
    try {
      fs.mkdirSync(ART, { recursive: true });
      const shot = path.join(ART, 'dashboard-failure.png');
      await page.screenshot({ path: shot, fullPage: true });
      console.error(`screenshot of the failure: ${shot}`);
    } catch { /* no screenshot */ }
  }
} finally {
  clearTimeout(watchdog);
  try { if (browser) await browser.close(); } catch { /* killed in cleanup */ }
  cleanup();
}
console.log(failed ? '0 passed, 1 failed' : '1 passed, 0 failed');
process.exit(failed ? 1 : 0);
