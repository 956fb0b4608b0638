// The browser scenarios of tests/test_browser.py: headless Chromium (the system's,
// through playwright-core: no browser download) against the example's production
// build and Rotor. This script only observes: what the pages showed, the cookies the
// browser kept, and Rotor's state through its admin API at each step. It prints one
// JSON object, a key per scenario, and the pytest test judges it.
//
// Input: the environment variable E2E_CONFIG, a JSON object (see tests/test_browser.py).

import { webcrypto } from "node:crypto";

import { chromium } from "playwright-core";
import { base64url, decodeJwt, jwtDecrypt } from "jose";

// jose uses the Web Crypto global, which Node.js 18 (Debian's) has only behind a flag.
globalThis.crypto ??= webcrypto;

const config = JSON.parse(process.env.E2E_CONFIG ?? "{}");
const KEY = base64url.decode(config.sessionSecret);
const COOKIE = config.cookieName;
const TIMEOUT = 30_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, check, timeoutMs = TIMEOUT, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** What the sealed cookie holds (the test knows SESSION_SECRET; a browser never does). */
async function open(value) {
  const { payload } = await jwtDecrypt(value, KEY);
  const access = decodeJwt(payload.at);
  return {
    accessToken: payload.at,
    refreshToken: payload.rt,
    sub: payload.sub,
    sid: payload.sid,
    name: payload.name,
    familyEnds: payload.fam,
    exp: payload.exp,
    accessExp: access.exp,
  };
}

/** Until the access token in the cookie has expired: Rotor counts it expired from its exp second on. */
async function untilExpired(opened) {
  const wait = opened.accessExp * 1000 + 100 - Date.now();
  if (wait > 0) await sleep(wait);
}

function basic({ client_id, client_secret }) {
  const pair = `${encodeURIComponent(client_id)}:${encodeURIComponent(client_secret)}`;
  return `Basic ${Buffer.from(pair).toString("base64")}`;
}

/** Rotor's admin API, with a fresh client_credentials token for each call (they live 2 s). */
function adminOf(rotor) {
  async function token() {
    const response = await fetch(`${rotor}/token`, {
      method: "POST",
      headers: { authorization: basic(config.admin), "content-type": "application/x-www-form-urlencoded" },
      body: "grant_type=client_credentials",
    });
    if (!response.ok) throw new Error(`admin token: ${response.status} ${await response.text()}`);
    return (await response.json()).access_token;
  }
  return async function admin(path) {
    const response = await fetch(`${rotor}${path}`, { headers: { authorization: `Bearer ${await token()}` } });
    if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
    return response.json();
  };
}

function pathOf(page) {
  const url = new URL(page.url());
  return url.pathname + url.search;
}

async function sessionCookie(context) {
  return (await context.cookies()).find((cookie) => cookie.name === COOKIE) ?? null;
}

function attributes(cookie) {
  if (!cookie) return null;
  const { value, ...rest } = cookie;
  return rest;
}

function elided(setCookie) {
  if (setCookie == null) return null;
  return setCookie.replace(/^([^=]+)=([^;]+)/, "$1=<value>");
}

function valueOf(setCookie) {
  const first = setCookie.split(";")[0];
  return decodeURIComponent(first.slice(first.indexOf("=") + 1));
}

async function text(page, selector) {
  const element = await page.$(selector);
  return element ? (await element.textContent())?.trim() ?? null : null;
}

/** A copy of a cookie for another context, host-only as the original (a domain without a
 * leading dot; a `url` would make Playwright drop Secure on http://, and the __Host- rules hold). */
function replayable(cookie, { sessionOnly = false } = {}) {
  const copy = {
    name: cookie.name,
    value: cookie.value,
    domain: cookie.domain,
    path: cookie.path,
    httpOnly: cookie.httpOnly,
    secure: cookie.secure,
    sameSite: cookie.sameSite,
  };
  if (!sessionOnly) copy.expires = cookie.expires;
  return copy;
}

async function submitLogin(page, app, username, password, expected) {
  await page.goto(`${app}/login`);
  await page.fill("#username", username);
  await page.fill("#password", password);
  const [response] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === "/api/login"),
    page.waitForURL(expected),
    page.click("button[type=submit]"),
  ]);
  return { status: response.status(), setCookie: await response.headerValue("set-cookie") };
}

async function login(page, app, user) {
  return submitLogin(page, app, user.username, user.password, (url) => url.pathname === "/dashboard");
}

async function dashboard(page, app) {
  const response = await page.goto(`${app}/dashboard`);
  return {
    status: response.status(),
    redirected: response.request().redirectedFrom() !== null,
    path: pathOf(page),
    username: await text(page, "[data-testid=username]"),
    setCookie: elided(await response.headerValue("set-cookie")),
  };
}

async function devices(page, app) {
  await page.goto(`${app}/devices`);
  return devicesShown(page);
}

async function devicesShown(page) {
  return {
    path: pathOf(page),
    notice: await text(page, "[role=status]"),
    rows: await page.$$eval("[data-session-id]", (items) =>
      items.map((item) => ({
        id: item.dataset.sessionId,
        current: item.dataset.current === "true",
        userAgent: item.querySelector("[data-field=user-agent]")?.textContent ?? null,
      })),
    ),
  };
}

function userAgent(scenario, device) {
  return `Rotor e2e (${scenario}, device ${device})`;
}

// ---- the scenarios -------------------------------------------------------------

/** Login: the dashboard, the cookie's exact attributes, no token in the page, generation 1. */
async function loginScenario({ browser, stack, user, admin }) {
  const context = await browser.newContext({ userAgent: userAgent("login", "A") });
  try {
    const page = await context.newPage();
    const wrong = await submitLogin(page, stack.app, user.username, "not the password", (url) => url.search !== "");
    const wrongPassword = {
      ...wrong,
      path: pathOf(page),
      alert: await text(page, "[role=alert]"),
      cookie: attributes(await sessionCookie(context)),
    };
    const loggedIn = await login(page, stack.app, user);
    const cookie = await sessionCookie(context);
    const sealed = await open(cookie.value);
    const html = await page.content();
    return {
      wrongPassword,
      status: loggedIn.status,
      setCookie: elided(loggedIn.setCookie),
      path: pathOf(page),
      username: await text(page, "[data-testid=username]"),
      userId: await text(page, "[data-testid=user-id]"),
      sessionId: await text(page, "[data-testid=session-id]"),
      cookie: attributes(cookie),
      cookieCount: (await context.cookies()).length,
      documentCookie: await page.evaluate(() => document.cookie),
      tokensInPage: html.includes(sealed.accessToken) || html.includes(sealed.refreshToken),
      sealed: { sub: sealed.sub, sid: sealed.sid, name: sealed.name, exp: sealed.exp, familyEnds: sealed.familyEnds },
      families: await admin(`/admin/users/${user.id}/families`),
      family: await admin(`/admin/families/${sealed.sid}`),
    };
  } finally {
    await context.close();
  }
}

/** Silent refresh on navigation; six parallel fetches on one expired token; a late request with the old cookie. */
async function refreshScenario({ browser, stack, user, admin }) {
  const context = await browser.newContext({ userAgent: userAgent("refresh", "A") });
  const late = await browser.newContext({ userAgent: userAgent("refresh", "A") });
  try {
    const page = await context.newPage();
    await login(page, stack.app, user);
    const first = await open((await sessionCookie(context)).value);
    const atLogin = await admin(`/admin/families/${first.sid}`);

    await untilExpired(first);
    const navigation = await dashboard(page, stack.app);
    const afterNavigationCookie = await sessionCookie(context);
    const second = await open(afterNavigationCookie.value);
    const afterNavigation = await admin(`/admin/families/${first.sid}`);

    await untilExpired(second);
    const seen = [];
    const onResponse = (response) => {
      if (new URL(response.url()).pathname === "/api/me") seen.push(response);
    };
    page.on("response", onResponse);
    const parallel = await page.evaluate(() =>
      Promise.all(
        Array.from({ length: 6 }, () =>
          fetch("/api/me", { cache: "no-store" }).then(async (r) => ({ status: r.status, body: await r.json() })),
        ),
      ),
    );
    await waitFor("six /api/me responses", () => seen.length >= 6);
    page.off("response", onResponse);
    const parallelCookies = await Promise.all(seen.map((r) => r.headerValue("set-cookie")));
    const parallelRefreshTokens = await Promise.all(
      parallelCookies.map(async (line) => (line ? (await open(valueOf(line))).refreshToken : null)),
    );
    const third = await open((await sessionCookie(context)).value);
    const afterParallel = await admin(`/admin/families/${first.sid}`);

    // A request that left the browser with the old cookie before the new one arrived:
    // Rotor's grace window answers its refresh with the same successor.
    await late.addCookies([replayable({ ...afterNavigationCookie })]);
    const latePage = await late.newPage();
    const lateResponse = await latePage.goto(`${stack.app}/api/me`);
    const lateSetCookie = await lateResponse.headerValue("set-cookie");
    const lateRequest = {
      status: lateResponse.status(),
      body: await lateResponse.json(),
      refreshToken: lateSetCookie ? (await open(valueOf(lateSetCookie))).refreshToken : null,
      secondsSinceRotation: (Date.now() - Date.parse(afterParallel.chain[1].spent_at)) / 1000,
    };
    const afterLate = await admin(`/admin/families/${first.sid}`);

    // The cookie the browser ended with works.
    await untilExpired(third);
    const final = await dashboard(page, stack.app);
    const finalRefreshToken = (await open((await sessionCookie(context)).value)).refreshToken;
    return {
      atLogin,
      navigation,
      cookieAfterNavigation: attributes(afterNavigationCookie),
      afterNavigation,
      refreshTokens: {
        first: first.refreshToken === second.refreshToken ? "same" : "changed",
        parallel: parallelRefreshTokens.map((token) =>
          token === null ? null : token === third.refreshToken ? "browser's" : token === second.refreshToken ? "parent" : "other",
        ),
        late: lateRequest.refreshToken === third.refreshToken ? "browser's" : "other",
        final: finalRefreshToken === third.refreshToken ? "browser's" : "new",
      },
      parallel,
      afterParallel,
      lateRequest: { ...lateRequest, refreshToken: undefined },
      afterLate,
      final,
      afterFinal: await admin(`/admin/families/${first.sid}`),
      reuseEvents: await admin(`/admin/events?type=reuse_detected&family_id=${first.sid}`),
    };
  } finally {
    await late.close();
    await context.close();
  }
}

/** A stolen cookie replayed after a rotation, past the grace window: the family ends, both are signed out. */
async function theftScenario({ browser, stack, user, admin }) {
  const victim = await browser.newContext({ userAgent: userAgent("theft", "victim") });
  const thief = await browser.newContext({ userAgent: userAgent("theft", "thief") });
  try {
    const page = await victim.newPage();
    await login(page, stack.app, user);
    const stolen = await sessionCookie(victim);
    const first = await open(stolen.value);
    await thief.addCookies([replayable(stolen)]);

    await untilExpired(first);
    const victimRotates = await dashboard(page, stack.app);
    const rotatedCookie = await sessionCookie(victim);
    const rotated = await open(rotatedCookie.value);
    const afterRotation = await admin(`/admin/families/${first.sid}`);

    // Past the grace window, by Rotor's own record of when the stolen token was spent.
    const spentAt = Date.parse(afterRotation.chain[0].spent_at);
    const wait = spentAt + stack.grace * 1000 + 500 - Date.now();
    if (wait > 0) await sleep(wait);
    const thiefPage = await thief.newPage();
    const replayAt = Date.now() / 1000;
    const thiefReplays = await dashboard(thiefPage, stack.app);
    const thiefCookie = attributes(await sessionCookie(thief));
    const afterReplay = await admin(`/admin/families/${first.sid}`);

    await untilExpired(rotated);
    const victimNext = await dashboard(page, stack.app);
    return {
      victimRotates,
      rotatedCookie: attributes(rotatedCookie),
      rotatedSealedExp: rotated.exp,
      afterRotation,
      replaySecondsAfterSpent: replayAt - spentAt / 1000,
      replayAt,
      stolenSealedExp: first.exp,
      thiefReplays,
      thiefCookie,
      afterReplay,
      reuseEvents: await admin(`/admin/events?type=reuse_detected&family_id=${first.sid}`),
      victimNext,
      victimCookie: attributes(await sessionCookie(victim)),
      afterAll: await admin(`/admin/families/${first.sid}`),
    };
  } finally {
    await thief.close();
    await victim.close();
  }
}

/** Logout revokes the family at Rotor (reason logout); a saved copy of the cookie is refused. */
async function logoutScenario({ browser, stack, user, admin }) {
  const context = await browser.newContext({ userAgent: userAgent("logout", "A") });
  const replay = await browser.newContext({ userAgent: userAgent("logout", "copy") });
  try {
    const page = await context.newPage();
    await login(page, stack.app, user);
    const saved = await sessionCookie(context);
    const sealed = await open(saved.value);

    const forged = async (headers) =>
      (
        await fetch(`${stack.app}/api/logout`, {
          method: "POST",
          headers: { cookie: `${COOKIE}=${saved.value}`, ...headers },
          redirect: "manual",
        })
      ).status;
    const crossSite = { foreignOrigin: await forged({ origin: "http://attacker.example" }), noOrigin: await forged({}) };
    const afterCrossSite = await admin(`/admin/families/${sealed.sid}`);

    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === "/api/logout"),
      page.waitForURL((url) => url.pathname === "/login"),
      page.click("button:has-text(\"Sign out\")"),
    ]);
    const logout = {
      status: response.status(),
      setCookie: elided(await response.headerValue("set-cookie")),
      path: pathOf(page),
      notice: await text(page, "[role=status]"),
      cookie: attributes(await sessionCookie(context)),
    };
    const afterLogout = await admin(`/admin/families/${sealed.sid}`);
    const revokedEvents = await admin(`/admin/events?type=family_revoked&family_id=${sealed.sid}`);

    // The access token in the copy verifies locally until it expires; then the copy
    // needs Rotor, which refuses the revoked family.
    await replay.addCookies([replayable(saved)]);
    await untilExpired(sealed);
    const replayPage = await replay.newPage();
    const replayed = await dashboard(replayPage, stack.app);
    return {
      crossSite,
      afterCrossSite,
      logout,
      afterLogout,
      revokedEvents,
      replayed,
      replayCookie: attributes(await sessionCookie(replay)),
      afterReplay: await admin(`/admin/families/${sealed.sid}`),
      reuseEvents: await admin(`/admin/events?type=reuse_detected&family_id=${sealed.sid}`),
    };
  } finally {
    await replay.close();
    await context.close();
  }
}

/** An unused session idles out: the browser drops the cookie, Rotor the family. */
async function idleScenario({ browser, stack, user, admin }) {
  const context = await browser.newContext({ userAgent: userAgent("idle", "A") });
  const replay = await browser.newContext({ userAgent: userAgent("idle", "copy") });
  try {
    const page = await context.newPage();
    await login(page, stack.app, user);
    const saved = await sessionCookie(context);
    const sealed = await open(saved.value);
    const atLogin = await admin(`/admin/families/${sealed.sid}`);

    await waitFor(
      "the browser to drop the expired cookie",
      async () => (await sessionCookie(context)) === null,
      saved.expires * 1000 - Date.now() + TIMEOUT,
    );
    const droppedAt = Date.now() / 1000;
    const navigation = await dashboard(page, stack.app);
    const expired = await waitFor(
      "Rotor to count the family expired",
      async () => {
        const family = await admin(`/admin/families/${sealed.sid}`);
        return family.status === "expired" ? family : null;
      },
      TIMEOUT,
      250,
    );

    // Rotor's side, without the browser: the idled-out refresh token itself.
    const direct = await fetch(`${stack.rotor}/refresh`, {
      method: "POST",
      headers: { authorization: basic(config.bff), "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: sealed.refreshToken }),
    });
    const rotorRefresh = { status: direct.status, body: await direct.json() };

    // The saved cookie, forced back into a browser that would no longer keep it.
    await replay.addCookies([replayable(saved, { sessionOnly: true })]);
    const replayPage = await replay.newPage();
    const replayed = await dashboard(replayPage, stack.app);
    return {
      atLogin,
      cookieExpires: saved.expires,
      droppedAt,
      navigation,
      expired,
      rotorRefresh,
      replayed,
      replayCookie: attributes(await sessionCookie(replay)),
      afterAll: await admin(`/admin/families/${sealed.sid}`),
    };
  } finally {
    await replay.close();
    await context.close();
  }
}

/** "Your devices": two browsers of one user; signing out the other ends only that one; then all others. */
async function devicesScenario({ browser, stack, user, admin }) {
  const contexts = {};
  try {
    const pages = {};
    for (const device of ["A", "B"]) {
      contexts[device] = await browser.newContext({ userAgent: userAgent("devices", device) });
      pages[device] = await contexts[device].newPage();
      await login(pages[device], stack.app, user);
    }
    const sid = async (device) => (await open((await sessionCookie(contexts[device])).value)).sid;
    const ids = { A: await sid("A"), B: await sid("B") };
    const seenByA = await devices(pages.A, stack.app);
    const seenByB = await devices(pages.B, stack.app);

    const rowB = pages.A.locator(`[data-session-id="${ids.B}"]`);
    await Promise.all([
      pages.A.waitForURL((url) => url.pathname === "/devices" && url.search !== ""),
      rowB.locator("button", { hasText: "Sign out this device" }).click(),
    ]);
    const afterSignOutB = await devicesShown(pages.A);
    const familiesAfterB = {
      A: await admin(`/admin/families/${ids.A}`),
      B: await admin(`/admin/families/${ids.B}`),
    };
    const nextOfB = await devices(pages.B, stack.app);

    contexts.C = await browser.newContext({ userAgent: userAgent("devices", "C") });
    pages.C = await contexts.C.newPage();
    await login(pages.C, stack.app, user);
    ids.C = await sid("C");
    const withC = await devices(pages.A, stack.app);
    await Promise.all([
      pages.A.waitForURL((url) => url.pathname === "/devices" && url.search !== ""),
      pages.A.click("text=Sign out all other devices"),
    ]);
    const afterOthers = await devicesShown(pages.A);
    const nextOfC = await devices(pages.C, stack.app);
    return {
      ids,
      userAgents: { A: userAgent("devices", "A"), B: userAgent("devices", "B"), C: userAgent("devices", "C") },
      seenByA,
      seenByB,
      afterSignOutB,
      familiesAfterB,
      nextOfB,
      withC,
      afterOthers,
      nextOfC,
      families: await admin(`/admin/users/${user.id}/families`),
    };
  } finally {
    for (const context of Object.values(contexts)) await context.close();
  }
}

const SCENARIOS = {
  login: loginScenario,
  refresh: refreshScenario,
  theft: theftScenario,
  logout: logoutScenario,
  idle: idleScenario,
  devices: devicesScenario,
};

async function run(browser, name, stackName) {
  const stack = config.stacks[stackName];
  const started = Date.now();
  try {
    const observed = await SCENARIOS[name]({ browser, stack, user: config.users[name], admin: adminOf(stack.rotor) });
    return { ...observed, seconds: (Date.now() - started) / 1000 };
  } catch (error) {
    return { error: String(error?.stack ?? error), seconds: (Date.now() - started) / 1000 };
  }
}

async function main() {
  const browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    timeout: 60_000,
    // Playwright gives each launch a new, empty profile (its own --user-data-dir).
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
  try {
    // Lanes run at the same time, the scenarios of a lane one after the other: each
    // has its own user, and their waits (token expiry, idle windows) overlap.
    const results = {};
    await Promise.all(
      config.lanes.map(async (lane) => {
        for (const [name, stack] of lane) results[name] = await run(browser, name, stack);
      }),
    );
    process.stdout.write(JSON.stringify(results));
  } finally {
    await browser.close();
  }
}

await main();
