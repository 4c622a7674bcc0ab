// Acceptance test of the webhooks against a running `capliquify serve`: every payload is
// signed by the providers' own libraries (svix's Webhook.sign for Clerk, stripe's
// webhooks.generateTestHeaderString for Stripe), and the resulting tenant state is read back
// with the `capliquify` CLI. Run through ../webhook-acceptance.sh, which starts the server.
import { execFileSync } from "node:child_process";
import Stripe from "stripe";
import { Webhook } from "svix";

const base = process.env.BASE_URL;
const clerkSecret = process.env.CLERK_WEBHOOK_SIGNING_SECRET;
const stripeSecret = process.env.STRIPE_WEBHOOK_SECRET;
const cli = process.env.CAPLIQUIFY_BIN;
const stripe = new Stripe("sk_test_not_used_for_signing");
const svix = new Webhook(clerkSecret);

let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) {
    passed += 1;
    console.log(`ok   ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name} ${detail}`);
  }
}

async function post(path, headers, body) {
  const res = await fetch(base + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
  let json = null;
  try { json = await res.json(); } catch { /* not JSON */ }
  return { status: res.status, json };
}

function clerk(id, event, { secret = svix, at = new Date(), body } = {}) {
  const payload = body ?? JSON.stringify(event);
  const signature = secret.sign(id, at, JSON.stringify(event));
  return post("/webhooks/clerk", {
    "svix-id": id,
    "svix-timestamp": String(Math.floor(at.getTime() / 1000)),
    "svix-signature": signature,
  }, payload);
}

function stripeSend(event, { secret = stripeSecret, timestamp } = {}) {
  const payload = JSON.stringify(event);
  const header = stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp });
  return post("/webhooks/stripe", { "stripe-signature": header }, payload);
}

function tenant(slug) {
  const out = execFileSync(cli, ["tenant", "show", slug, "--json"], { encoding: "utf8" });
  return JSON.parse(out);
}

const now = Date.now();
const org = {
  type: "organization.created", object: "event", timestamp: now,
  data: { id: "org_accept", object: "organization", name: "Acceptance Corp", slug: "acceptance-corp",
          created_by: "user_accept_owner", created_at: now, updated_at: now },
};

let r = await clerk("msg_accept_1", org);
check("clerk organization.created is applied", r.status === 200 && r.json?.outcome === "applied", JSON.stringify(r));
r = await clerk("msg_accept_1", org);
check("a replayed clerk event is a duplicate", r.status === 200 && r.json?.outcome === "duplicate", JSON.stringify(r));
const t = tenant("acceptance-corp");
check("the tenant is a starter trial", t.subscription_tier === "starter" && t.subscription_status === "trial", JSON.stringify(t));

const membership = {
  type: "organizationMembership.created", object: "event", timestamp: now + 1,
  data: { id: "orgmem_1", role: "org:admin", organization: { id: "org_accept" },
          public_user_data: { user_id: "user_accept_owner", identifier: "owner@acceptance.test", first_name: "Ada", last_name: "L" },
          created_at: now + 1, updated_at: now + 1 },
};
r = await clerk("msg_accept_2", membership);
check("clerk membership is applied", r.status === 200 && r.json?.outcome === "applied", JSON.stringify(r));

r = await clerk("msg_accept_3", org, { body: JSON.stringify({ ...org, data: { ...org.data, name: "Tampered" } }) });
check("a tampered clerk body is refused", r.status === 400, JSON.stringify(r));
r = await clerk("msg_accept_4", org, { secret: new Webhook("whsec_" + Buffer.from("not the right secret").toString("base64")) });
check("a clerk event signed with another secret is refused", r.status === 400, JSON.stringify(r));
r = await clerk("msg_accept_5", org, { at: new Date(now - 10 * 60 * 1000) });
check("a stale clerk signature is refused", r.status === 400, JSON.stringify(r));
r = await clerk("msg_accept_6", org, { at: new Date(now + 10 * 60 * 1000) });
check("a future clerk signature is refused", r.status === 400, JSON.stringify(r));

const created = Math.floor(now / 1000);
const checkout = (id, reference, customer) => ({ id, object: "event", type: "checkout.session.completed", created,
  data: { object: { id: "cs_" + id, object: "checkout.session", client_reference_id: reference, customer } } });
r = await stripeSend(checkout("evt_accept_0", "acceptance-corp", "cus_accept"));
check("a checkout naming a slug is not followed", r.status === 200 && r.json?.outcome === "ignored", JSON.stringify(r));
r = await stripeSend(checkout("evt_accept_1", t.id, "cus_accept"));
check("stripe checkout links the customer by tenant id", r.status === 200 && r.json?.outcome === "applied", JSON.stringify(r));
r = await stripeSend(checkout("evt_accept_1b", t.id, "cus_other"));
check("a checkout cannot relink the tenant to another customer", r.status === 200 && r.json?.outcome === "refused", JSON.stringify(r));
const subscription = (id, type, price, status, at) => ({ id, object: "event", type, created: at,
  data: { object: { id: "sub_accept", object: "subscription", customer: "cus_accept", status, cancel_at_period_end: false,
    current_period_start: at, current_period_end: at + 30 * 86400, metadata: {},
    items: { data: [{ price: { id: price, unit_amount: 4900, currency: "usd", recurring: { interval: "month" } } }] } } } });
r = await stripeSend(subscription("evt_accept_2", "customer.subscription.created", "price_accept_pro", "active", created + 1));
check("stripe subscription.created is applied", r.status === 200 && r.json?.outcome === "applied", JSON.stringify(r));
let after = tenant("acceptance-corp");
check("the tenant follows the plan", after.subscription_tier === "professional" && after.subscription_status === "active" && after.max_users === 25, JSON.stringify(after));
r = await stripeSend(subscription("evt_accept_2", "customer.subscription.created", "price_accept_pro", "active", created + 1));
check("a replayed stripe event is a duplicate", r.status === 200 && r.json?.outcome === "duplicate", JSON.stringify(r));
r = await stripeSend({ id: "evt_accept_3", object: "event", type: "invoice.payment_failed", created: created + 2,
  data: { object: { id: "in_1", object: "invoice", customer: "cus_accept" } } });
check("stripe invoice.payment_failed is applied", r.status === 200 && r.json?.outcome === "applied", JSON.stringify(r));
after = tenant("acceptance-corp");
check("the tenant is past due", after.subscription_status === "past_due", JSON.stringify(after));
r = await stripeSend(subscription("evt_accept_4", "customer.subscription.updated", "price_accept_ent", "active", created - 100));
check("an older stripe event is stale", r.status === 200 && r.json?.outcome === "stale", JSON.stringify(r));
r = await stripeSend({ id: "evt_accept_5", type: "invoice.paid", created, data: { object: { customer: "cus_accept" } } }, { secret: "whsec_wrong" });
check("a stripe event signed with another secret is refused", r.status === 400, JSON.stringify(r));
r = await stripeSend({ id: "evt_accept_6", type: "invoice.paid", created, data: { object: { customer: "cus_accept" } } },
  { timestamp: Math.floor(now / 1000) - 600 });
check("a stale stripe signature is refused", r.status === 400, JSON.stringify(r));
r = await stripeSend({ id: "evt_accept_7", type: "charge.refunded", created, data: { object: { id: "ch_1" } } });
check("an unknown stripe type is acknowledged as ignored", r.status === 200 && r.json?.outcome === "ignored", JSON.stringify(r));

console.log(`webhooks: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
