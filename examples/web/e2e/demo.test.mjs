// The help page's story in a real browser: Debian's Chromium, headless,
// driven by playwright-core. The widget is served from its own origin (a
// customer's site, admitted with --cors-origin); the Inbox from the server
// itself (--web-root). Screenshots of each step go to e2e/artifacts/.
//
//   npm run build && CONVERSATIONS_BIN=../../target/debug/conversations npm run e2e
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const web = fileURLToPath(new URL("..", import.meta.url));
const repo = resolve(web, "../..");
const dist = join(web, "dist");
const artifacts = join(web, "e2e", "artifacts");
const bin = resolve(process.env.CONVERSATIONS_BIN ?? join(repo, "target/debug/conversations"));
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const STEP = 10_000;

let site; // the customer's website, serving the widget page
let server; // conversations serve
let serverUrl;
let browser;
let dir;

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

/// A static server for dist/ on 127.0.0.1 and a free port.
function serveSite() {
  return new Promise((ready) => {
    const http = createServer((request, response) => {
      const path = normalize(decodeURIComponent(new URL(request.url, "http://x").pathname));
      const file = join(dist, path === "/" ? "index.html" : path);
      if (!file.startsWith(dist)) {
        response.writeHead(404).end();
        return;
      }
      try {
        const body = readFileSync(file);
        response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
        response.end(body);
      } catch {
        response.writeHead(404).end();
      }
    });
    http.listen(0, "127.0.0.1", () => ready(http));
  });
}

function cli(...args) {
  return execFileSync(bin, ["--database", join(dir, "conversations.db"), ...args], {
    encoding: "utf8",
  });
}

/// Starts the server; resolves with its address once it listens.
function startServer(siteOrigin) {
  return new Promise((ready, fail) => {
    const child = spawn(
      bin,
      [
        "--database", join(dir, "conversations.db"),
        "serve",
        "--listen", "127.0.0.1:0",
        "--web-root", dist,
        "--cors-origin", siteOrigin,
        "--shutdown-grace", "1",
      ],
      // Its log (a line per call) beside the screenshots.
      { stdio: ["ignore", "pipe", openSync(join(artifacts, "server.log"), "w")] },
    );
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const listening = out.match(/Listening on (\S+)/);
      if (listening) {
        ready({ child, address: listening[1] });
      }
    });
    child.on("exit", (code) => fail(new Error(`the server exited (${code}) before listening:\n${out}`)));
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "conversations-e2e-"));
  rmSync(artifacts, { recursive: true, force: true });
  mkdirSync(artifacts, { recursive: true });
  site = await serveSite();
  const siteOrigin = `http://127.0.0.1:${site.address().port}`;
  server = await startServer(siteOrigin);
  serverUrl = `http://${server.address}`;
  // The bot flow new conversations run (its greeting is what a restart replays).
  cli("flow", "apply", join(repo, "examples/flows/greeting.toml"));
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.child.kill("SIGTERM");
  site?.close();
  if (dir) {
    rmSync(dir, { recursive: true, force: true });
  }
});

/// Links from `conversations demo`: the widget on the site's origin, the
/// Inbox on the server's.
function demoLinks() {
  const printed = cli("demo", "--server", serverUrl, "--pages", `http://127.0.0.1:${site.address().port}`, "--visitor-id", "ada");
  const widget = printed.match(/^widget: (\S+)$/m)?.[1];
  const key = printed.match(/inbox\.html#key=([^&\s]+)/)?.[1];
  assert.ok(widget && key, `demo printed both links:\n${printed}`);
  assert.match(widget, /#token=cvs_/);
  return { widget, inbox: `${serverUrl}/inbox.html#key=${key}` };
}

async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`) });
}

test("the widget and the Inbox follow the help page's story live, without reloading", async () => {
  const links = demoLinks();
  const visitor = await (await browser.newContext({ viewport: { width: 420, height: 620 } })).newPage();
  const agent = await (await browser.newContext({ viewport: { width: 1100, height: 620 } })).newPage();
  const errors = [];
  for (const page of [visitor, agent]) {
    page.on("pageerror", (error) => errors.push(error.message));
    page.on("console", (message) => {
      if (message.type() === "error") {
        errors.push(message.text());
      }
    });
  }
  const messages = visitor.getByTestId("message");
  const inboxMessages = agent.getByTestId("inbox-thread").getByTestId("message");
  const count = (status) => agent.getByTestId(`count-${status}`);
  const expectText = (locator, text) => locator.filter({ hasText: text }).first().waitFor({ timeout: STEP });

  // 1. A visitor opens the widget: the bot flow greets and asks.
  await visitor.goto(links.widget);
  await expectText(messages, "Hi! I'm the Acme assistant.");
  await expectText(messages, "What's your name?");
  assert.equal(await visitor.getByTestId("status").textContent(), "Open");
  // 2. ... and writes.
  await visitor.getByTestId("input").fill("Ada Lovelace");
  await visitor.getByTestId("send").click();
  await expectText(messages, "Ada Lovelace");
  await shot(visitor, "01-widget-visitor-writes");

  // 3. The Inbox lists it under Open; the agent opens it and marks it pending.
  await agent.goto(links.inbox);
  await expectText(agent.getByTestId("conversation"), "ada");
  await agent.waitForFunction(() => document.querySelector("[data-testid=count-open]").textContent === "1");
  await agent.getByTestId("conversation").first().click();
  await expectText(inboxMessages, "Ada Lovelace");
  await agent.getByTestId("reply").fill("Thanks Ada! Checking with the team.");
  await agent.getByTestId("reply-send").click();
  await expectText(messages, "Thanks Ada! Checking with the team.");
  // An internal note: in the Inbox thread, never in the widget.
  await agent.getByTestId("note").check();
  await agent.getByTestId("reply").fill("Hot lead: 50 seats");
  await agent.getByTestId("reply-send").click();
  await expectText(inboxMessages.filter({ hasText: "internal note" }), "Hot lead: 50 seats");
  await agent.getByTestId("mark-pending").click();
  await agent.waitForFunction(() => document.querySelector("[data-testid=count-pending]").textContent === "1");
  assert.equal(await count("open").textContent(), "0");
  await expectText(visitor.getByTestId("status"), "Pending");
  await shot(agent, "02-inbox-marked-pending");

  // 4. The visitor's reply returns it to Open, and the tabs follow.
  await visitor.getByTestId("input").fill("Great, thank you");
  await visitor.getByTestId("send").click();
  await agent.waitForFunction(() => document.querySelector("[data-testid=count-open]").textContent === "1");
  assert.equal(await count("pending").textContent(), "0");
  await expectText(visitor.getByTestId("status"), "Open");
  assert.equal(await messages.filter({ hasText: "Hot lead" }).count(), 0, "the note stays agents-only");

  // 5. The Inbox closes it: the widget shows the notice and takes no input.
  await agent.getByTestId("close").click();
  await agent.waitForFunction(() => document.querySelector("[data-testid=count-closed]").textContent === "1");
  await visitor.getByTestId("closed-notice").waitFor({ state: "visible", timeout: STEP });
  // (Who closed it is for agents: the visitor sees the notice.)
  assert.equal(await visitor.getByTestId("input").isDisabled(), true);
  assert.equal(await visitor.getByTestId("input").isVisible(), false);
  await expectText(inboxMessages, "Dana closed the conversation");
  await shot(visitor, "03-widget-closed-notice");
  await shot(agent, "04-inbox-closed");

  // 6. The visitor restarts it: the bot flow greets again from the top.
  const greetings = () => messages.filter({ hasText: "Hi! I'm the Acme assistant." }).count();
  assert.equal(await greetings(), 1);
  await visitor.getByTestId("restart").click();
  await visitor.waitForFunction(
    () => [...document.querySelectorAll("[data-testid=message]")].filter((m) => m.textContent.includes("Hi! I'm the Acme assistant.")).length === 2,
    null,
    { timeout: STEP },
  );
  await visitor.getByTestId("closed-notice").waitFor({ state: "hidden", timeout: STEP });
  assert.equal(await visitor.getByTestId("input").isEnabled(), true);
  await agent.waitForFunction(() => document.querySelector("[data-testid=count-open]").textContent === "1");
  assert.equal(await count("closed").textContent(), "0");
  await shot(visitor, "05-widget-restarted-bot-greets-again");

  // 7. The Inbox closes and reopens it: the widget shows the reopen message.
  await agent.getByTestId("close").click();
  await visitor.getByTestId("closed-notice").waitFor({ state: "visible", timeout: STEP });
  await agent.getByTestId("reopen").click();
  await expectText(messages, "Dana reopened the conversation.");
  await visitor.getByTestId("closed-notice").waitFor({ state: "hidden", timeout: STEP });
  await agent.waitForFunction(() => document.querySelector("[data-testid=count-open]").textContent === "1");
  assert.equal(await count("closed").textContent(), "0");
  await expectText(inboxMessages, "Dana reopened the conversation.");
  await shot(visitor, "06-widget-reopened");
  await shot(agent, "07-inbox-reopened");

  assert.deepEqual(errors, [], "no script errors on either page");
});
