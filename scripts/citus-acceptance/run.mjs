// The API side of ../citus-acceptance.sh: provisions tenants through Clerk webhooks signed by
// svix's own library, writes each tenant's rows through the API with member tokens signed by
// this run's key, and checks that tenants stay apart under concurrency and that every write
// has its audit row. `node run.mjs provision|write|isolation|traffic|load|expect`.
import { createSign, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { Webhook } from "svix";

const base = process.env.BASE_URL;
const cli = process.env.CAPLIQUIFY_BIN;
const key = readFileSync(process.env.CLERK_KEY);
const issuer = process.env.CLERK_ISSUER;
const svix = new Webhook(process.env.CLERK_WEBHOOK_SIGNING_SECRET);

function die(message) {
  console.log(`FAIL ${message}`);
  process.exit(1);
}
function ok(message) {
  console.log(`ok   ${message}`);
}

// The tenants: two made by `capliquify tenant create` (org_cli_N), four by webhooks.
const orgs = [
  ...[1, 2].map((i) => ({ org: `org_cli_${i}`, slug: `cli-${i}`, byWebhook: false })),
  ...[1, 2, 3, 4].map((i) => ({ org: `org_hook_${i}`, slug: `hook-${i}`, byWebhook: true })),
];

function b64url(value) {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}
function token(org) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url({ alg: "RS256", typ: "JWT", kid: "citus" });
  const body = b64url({ iss: issuer, sub: `user_${org}`, iat: now, nbf: now - 5, exp: now + 3600, v: 2, o: { id: org } });
  const sign = createSign("RSA-SHA256");
  sign.update(`${head}.${body}`);
  return `${head}.${body}.${sign.sign(key).toString("base64url")}`;
}

async function call(method, path, { org, body, headers = {} } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: {
      "content-type": "application/json",
      ...(org ? { authorization: `Bearer ${token(org)}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  let json = null;
  const text = await res.text();
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

async function clerk(event) {
  const id = `msg_${randomUUID()}`;
  const at = new Date();
  const payload = JSON.stringify(event);
  return call("POST", "/webhooks/clerk", {
    body: payload,
    headers: {
      "svix-id": id,
      "svix-timestamp": String(Math.floor(at.getTime() / 1000)),
      "svix-signature": svix.sign(id, at, payload),
    },
  });
}

async function provision() {
  const now = Date.now();
  for (const t of orgs) {
    if (t.byWebhook) {
      const r = await clerk({
        type: "organization.created", object: "event", timestamp: now,
        data: { id: t.org, object: "organization", name: `Hook ${t.slug}`, slug: t.slug,
                created_by: `user_${t.org}`, created_at: now, updated_at: now },
      });
      if (r.status !== 200 || r.json?.outcome !== "applied") die(`clerk organization.created for ${t.slug}: ${r.status} ${r.text}`);
    }
    const r = await clerk({
      type: "organizationMembership.created", object: "event", timestamp: now + 1,
      data: { id: `orgmem_${t.org}`, role: "org:admin", organization: { id: t.org },
              public_user_data: { user_id: `user_${t.org}`, identifier: `admin@${t.slug}.test`, first_name: "A", last_name: "B" },
              created_at: now + 1, updated_at: now + 1 },
    });
    if (r.status !== 200 || r.json?.outcome !== "applied") die(`clerk membership for ${t.slug}: ${r.status} ${r.text}`);
  }
  ok(`4 organizations and 6 memberships applied through signed Clerk webhooks`);
}

async function createOrDie(org, path, body) {
  const r = await call("POST", path, { org, body });
  if (r.status !== 201) die(`POST ${path} for ${org}: ${r.status} ${r.text}`);
  return r.json;
}

// Each tenant: one company, 3 + its index products named after it, and 2 sales each.
async function write() {
  await Promise.all(orgs.map(async (t, i) => {
    const company = await createOrDie(t.org, "/api/v1/companies", { name: `${t.slug} works`, currency: "EUR" });
    for (let p = 0; p < 3 + i; p += 1) {
      const product = await createOrDie(t.org, "/api/v1/products", {
        company_id: company.id, sku: `${t.slug}-SKU-${p}`, name: `${t.slug} widget ${p}`,
        unit_cost: "1.25", unit_price: "2.50",
      });
      for (let s = 0; s < 2; s += 1) {
        await createOrDie(t.org, "/api/v1/sales", {
          company_id: company.id, product_id: product.id, sale_date: `2026-0${1 + s}-15`, quantity: 1 + s, unit_price: "2.50",
        });
      }
    }
    // Scenarios are audited writes: one per tenant plus its index.
    for (let s = 0; s < 1 + i; s += 1) {
      await createOrDie(t.org, "/api/v1/scenarios", { company_id: company.id, name: `${t.slug} plan ${s}`, parameters: {} });
    }
  }));
  ok("each tenant's company, products, sales and scenarios written through the API");
}

async function isolation() {
  // 20 rounds of every tenant listing its products and sales at once: each sees its own only.
  let reads = 0;
  for (let round = 0; round < 20; round += 1) {
    await Promise.all(orgs.map(async (t, i) => {
      const products = await call("GET", "/api/v1/products?limit=100", { org: t.org });
      if (products.status !== 200) die(`GET products for ${t.slug}: ${products.status} ${products.text}`);
      const rows = products.json.data ?? products.json.items ?? products.json;
      if (!Array.isArray(rows) || rows.length !== 3 + i) die(`${t.slug} sees ${rows?.length} products, not ${3 + i}`);
      const foreign = rows.filter((p) => !p.sku.startsWith(`${t.slug}-`));
      if (foreign.length) die(`${t.slug} sees another tenant's products: ${foreign.map((p) => p.sku)}`);
      reads += 1;
    }));
  }
  ok(`tenants apart under concurrency: ${reads} concurrent reads, each only its own rows`);
  // Every audited write (scenarios) has its audit row in the coordinator's trail.
  for (const [i, t] of orgs.entries()) {
    const r = await call("GET", "/api/v1/audit-logs?limit=200", { org: t.org });
    if (r.status !== 200) die(`GET audit-logs for ${t.slug}: ${r.status} ${r.text}`);
    const rows = r.json.data ?? r.json.items ?? r.json;
    const acts = rows.filter((a) => a.action === "scenario.created");
    const expected = 1 + i;
    if (acts.length !== expected) die(`${t.slug}: ${acts.length} audit rows of writes, expected ${expected}: ${JSON.stringify(rows.map((a) => a.action))}`);
  }
  ok("every API write has its audit row (read back through /api/v1/audit-logs)");
}

// A bounded writer (one sale at a time) and a reader (the sales list) on one tenant for
// TRAFFIC_SECONDS, while the shell moves or rebalances: every request must succeed (no 503,
// no error), and the acknowledged sale ids are written to TRAFFIC_OUT for the shell to find
// after the move. Prints the longest write (the stall of the final switch).
async function traffic() {
  const t = orgs.find((o) => o.slug === process.env.TRAFFIC_SLUG) ?? die(`no tenant ${process.env.TRAFFIC_SLUG}`);
  const seconds = Number(process.env.TRAFFIC_SECONDS ?? 30);
  const companies = await call("GET", "/api/v1/companies?limit=1", { org: t.org });
  const company = (companies.json.data ?? companies.json.items ?? companies.json)[0];
  const products = await call("GET", "/api/v1/products?limit=1", { org: t.org });
  const product = (products.json.data ?? products.json.items ?? products.json)[0];
  const until = Date.now() + seconds * 1000;
  const acked = [];
  const failures = [];
  let longest = 0;
  let reads = 0;
  const writer = (async () => {
    let n = 0;
    while (Date.now() < until) {
      const began = Date.now();
      const r = await call("POST", "/api/v1/sales", { org: t.org, body: {
        company_id: company.id, product_id: product.id, sale_date: "2026-03-01", quantity: 1 + (n % 5), unit_price: "2.50",
      } });
      longest = Math.max(longest, Date.now() - began);
      if (r.status === 201) acked.push(r.json.id); else failures.push(`POST ${r.status} ${r.text.slice(0, 200)}`);
      n += 1;
    }
  })();
  const reader = (async () => {
    while (Date.now() < until) {
      const r = await call("GET", "/api/v1/sales?limit=50", { org: t.org });
      if (r.status === 200) reads += 1; else failures.push(`GET ${r.status} ${r.text.slice(0, 200)}`);
    }
  })();
  await Promise.all([writer, reader]);
  (await import("node:fs")).writeFileSync(process.env.TRAFFIC_OUT, acked.join("\n") + "\n");
  if (failures.length) die(`${failures.length} failed request(s) on ${t.slug} during the move: ${failures.slice(0, 3).join(" | ")}`);
  ok(`${t.slug}: ${acked.length} writes and ${reads} reads in ${seconds} s, none failed; longest write ${longest} ms`);
}

// Throughput: LOAD_CLIENTS clients, each on one tenant in turn, for LOAD_SECONDS: a sale
// written then the sales list read, again and again. Prints requests per second; any
// failed request fails the run.
async function load() {
  const clients = Number(process.env.LOAD_CLIENTS ?? 8);
  const seconds = Number(process.env.LOAD_SECONDS ?? 10);
  const targets = await Promise.all(orgs.map(async (t) => {
    const c = await call("GET", "/api/v1/companies?limit=1", { org: t.org });
    const p = await call("GET", "/api/v1/products?limit=1", { org: t.org });
    return { org: t.org, company: (c.json.data ?? c.json)[0].id, product: (p.json.data ?? p.json)[0].id };
  }));
  const until = Date.now() + seconds * 1000;
  let requests = 0;
  const failures = [];
  await Promise.all(Array.from({ length: clients }, async (_, i) => {
    const t = targets[i % targets.length];
    while (Date.now() < until) {
      const w = await call("POST", "/api/v1/sales", { org: t.org, body: {
        company_id: t.company, product_id: t.product, sale_date: "2026-04-01", quantity: 1, unit_price: "2.50" } });
      const r = await call("GET", "/api/v1/sales?limit=20", { org: t.org });
      requests += 2;
      if (w.status !== 201 || r.status !== 200) failures.push(`${w.status}/${r.status}`);
    }
  }));
  if (failures.length) die(`${failures.length} failed request pair(s) under load: ${failures.slice(0, 3)}`);
  ok(`load (${process.env.LOAD_LABEL}): ${clients} clients over ${targets.length} tenants, ${(requests / seconds).toFixed(0)} requests/s (half writes), none failed`);
}

// One read and one write of EXPECT_SLUG through the API must both answer EXPECT_STATUS
// (and, for an error, the problem's code EXPECT_CODE): a suspended tenant's refusal, or a
// tenant back in service.
async function expect() {
  const t = orgs.find((o) => o.slug === process.env.EXPECT_SLUG) ?? die(`no tenant ${process.env.EXPECT_SLUG}`);
  const status = Number(process.env.EXPECT_STATUS);
  const code = process.env.EXPECT_CODE;
  const read = await call("GET", "/api/v1/products?limit=100", { org: t.org });
  const write = await call("POST", "/api/v1/companies", { org: t.org, body: { name: `${t.slug} probe ${Date.now()}`, currency: "EUR" } });
  for (const [what, r] of [["GET /api/v1/products", read], ["POST /api/v1/companies", write]]) {
    const want = what.startsWith("POST") && status === 200 ? 201 : status;
    if (r.status !== want || (code && r.json?.code !== code)) die(`${t.slug}: ${what} answered ${r.status} ${r.text.slice(0, 200)}, expected ${want}${code ? ` ${code}` : ""}`);
  }
  const rows = read.json?.data ?? read.json?.items;
  ok(`${t.slug}: reads and writes answer ${status}${code ? ` ${code}` : ` (${rows?.length} products)`}`);
}

const mode = process.argv[2];
if (mode === "provision") await provision();
else if (mode === "write") await write();
else if (mode === "isolation") await isolation();
else if (mode === "traffic") await traffic();
else if (mode === "load") await load();
else if (mode === "expect") await expect();
else die(`unknown mode ${mode}`);
