import "server-only";

import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTPayload } from "jose";

import { config } from "./config";

/** A token answer of Rotor's /token and /refresh (RFC 6749 5.1). */
export interface Tokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  token_type: string;
  scope: string;
}

/** The claims this app relies on (RFC 9068 2.2; `sid` is Rotor's family id). */
export interface AccessClaims extends JWTPayload {
  sub: string;
  sid: string;
  client_id: string;
  exp: number;
  iat: number;
}

/** One of the user's active sessions (CONTRACT 3.8). */
export interface Device {
  id: string;
  client_id: string;
  client_name: string;
  created_at: string;
  last_rotated_at: string | null;
  expires_at: string;
  login_ip: string | null;
  login_user_agent: string | null;
  last_ip: string | null;
  last_user_agent: string | null;
  current: boolean;
}

/** Rotor said the session is over (400 invalid_grant at /refresh, 401 at /sessions): log in again. */
export class SessionOver extends Error {}

/** Rotor could not answer (network, 5xx, 429): try again with the same token. */
export class RotorUnavailable extends Error {}

/** The browser this server speaks for: Rotor records them for "your devices", and
 * counts failed logins per IP (it believes X-Forwarded-For only from ROTOR_TRUSTED_PROXIES). */
export interface Caller {
  userAgent: string | null;
  forwardedFor: string | null;
}

export function callerOf(headers: Headers): Caller {
  return { userAgent: headers.get("user-agent"), forwardedFor: headers.get("x-forwarded-for") };
}

function endpoint(path: string): string {
  return `${config().issuer.replace(/\/+$/, "")}${path}`;
}

/** client_secret_basic (RFC 6749 2.3.1): both parts form-encoded, then base64. */
function basic(): string {
  const { clientId, clientSecret } = config();
  const pair = `${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`;
  return `Basic ${Buffer.from(pair).toString("base64")}`;
}

function forwarded(caller: Caller): Record<string, string> {
  const headers: Record<string, string> = {};
  if (caller.userAgent) headers["user-agent"] = caller.userAgent;
  if (caller.forwardedFor) headers["x-forwarded-for"] = caller.forwardedFor;
  return headers;
}

async function call(path: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(endpoint(path), { ...init, cache: "no-store", signal: AbortSignal.timeout(10_000) });
  } catch (error) {
    throw new RotorUnavailable(`${path}: ${String(error)}`);
  }
}

async function errorCode(response: Response): Promise<string> {
  const body: unknown = await response.json().catch(() => null);
  return body && typeof body === "object" && "error" in body ? String(body.error) : "";
}

export type Login = { ok: true; tokens: Tokens } | { ok: false; reason: "invalid" | "locked" | "unavailable" };

/** The password grant (RFC 6749 4.3) at /token: starts a new family. */
export async function passwordGrant(username: string, password: string, caller: Caller): Promise<Login> {
  let response: Response;
  try {
    response = await call("/token", {
      method: "POST",
      headers: { authorization: basic(), "content-type": "application/x-www-form-urlencoded", ...forwarded(caller) },
      body: new URLSearchParams({ grant_type: "password", username, password }),
    });
  } catch {
    return { ok: false, reason: "unavailable" };
  }
  if (response.ok) return { ok: true, tokens: (await response.json()) as Tokens };
  if (response.status === 429) return { ok: false, reason: "locked" };
  if (response.status === 400 && (await errorCode(response)) === "invalid_grant") return { ok: false, reason: "invalid" };
  return { ok: false, reason: "unavailable" };
}

// One refresh per refresh token at a time in this process (docs/clients.md, "Refresh
// safely"): requests that find the same expired access token share one rotation. What
// this cannot cover (a request that left the browser before the new cookie arrived,
// another instance of this app, a lost response) Rotor's grace window does: within
// ROTOR_REUSE_GRACE the same parent returns the same successor (CONTRACT 3.3).
const inFlight = new Map<string, Promise<Tokens>>();

/** Rotation at /refresh: the presented token is spent, its successor returned. */
export function refresh(refreshToken: string, caller: Caller): Promise<Tokens> {
  let flight = inFlight.get(refreshToken);
  if (!flight) {
    flight = rotate(refreshToken, caller).finally(() => inFlight.delete(refreshToken));
    inFlight.set(refreshToken, flight);
  }
  return flight;
}

async function rotate(refreshToken: string, caller: Caller): Promise<Tokens> {
  const response = await call("/refresh", {
    method: "POST",
    headers: { authorization: basic(), "content-type": "application/json", ...forwarded(caller) },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
  if (response.ok) return (await response.json()) as Tokens;
  // 400: expired, revoked, or reused (then Rotor has just ended the family): the
  // session is over. Anything else (503 with Retry-After) is worth another try.
  if (response.status === 400) throw new SessionOver(await errorCode(response));
  throw new RotorUnavailable(`/refresh answered ${response.status}`);
}

/** RFC 7009 at /revoke: the refresh token's family ends (reason `logout`). */
export async function revoke(refreshToken: string): Promise<void> {
  const response = await call("/revoke", {
    method: "POST",
    headers: { authorization: basic(), "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token: refreshToken, token_type_hint: "refresh_token" }),
  });
  if (!response.ok) throw new RotorUnavailable(`/revoke answered ${response.status}`);
}

function bearer(accessToken: string): Record<string, string> {
  return { authorization: `Bearer ${accessToken}` };
}

async function sessionsAnswer(response: Response): Promise<Response> {
  if (response.status === 401) throw new SessionOver(await errorCode(response));
  if (response.status >= 500) throw new RotorUnavailable(`/sessions answered ${response.status}`);
  return response;
}

/** GET /sessions (CONTRACT 3.8): the user's active families, newest first, every page. */
export async function listDevices(accessToken: string): Promise<Device[]> {
  const devices: Device[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 20; page++) {
    const query: string = cursor ? `?limit=100&cursor=${encodeURIComponent(cursor)}` : "?limit=100";
    const response = await sessionsAnswer(await call(`/sessions${query}`, { headers: bearer(accessToken) }));
    if (!response.ok) throw new RotorUnavailable(`/sessions answered ${response.status}`);
    const body = (await response.json()) as { items: Device[]; next: string | null };
    devices.push(...body.items);
    cursor = body.next;
    if (!cursor) break;
  }
  return devices;
}

/** DELETE /sessions/{id}: false when Rotor answers 404 (not this user's, or already over). */
export async function revokeDevice(accessToken: string, id: string): Promise<boolean> {
  const response = await sessionsAnswer(
    await call(`/sessions/${encodeURIComponent(id)}`, { method: "DELETE", headers: bearer(accessToken) }),
  );
  if (response.status === 204) return true;
  if (response.status === 404) return false;
  throw new RotorUnavailable(`DELETE /sessions answered ${response.status}`);
}

/** POST /sessions/revoke-others: every other session of the user ends; answers how many. */
export async function revokeOtherDevices(accessToken: string): Promise<number> {
  const response = await sessionsAnswer(
    await call("/sessions/revoke-others", { method: "POST", headers: bearer(accessToken) }),
  );
  if (!response.ok) throw new RotorUnavailable(`/sessions/revoke-others answered ${response.status}`);
  return ((await response.json()) as { revoked: number }).revoked;
}

let jwks: ReturnType<typeof createRemoteJWKSet> | undefined;

/**
 * Verifies an access token locally with Rotor's JWKS (RFC 9068 4): signature by a
 * published key, the pinned algorithm, `typ: at+jwt`, issuer, audience, expiry (no
 * leeway, as Rotor allows none), and that it was issued to this client. `at` is the
 * moment it must still be valid at.
 */
export async function verifyAccessToken(token: string, at: Date = new Date()): Promise<AccessClaims> {
  const { issuer, audience, algorithm, clientId } = config();
  jwks ??= createRemoteJWKSet(new URL(endpoint("/.well-known/jwks.json")));
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    algorithms: [algorithm],
    typ: "at+jwt",
    requiredClaims: ["sub", "sid", "client_id", "exp", "iat", "jti"],
    currentDate: at,
  });
  if (payload.client_id !== clientId) throw new Error("access token of another client");
  return payload as AccessClaims;
}

/**
 * Whether the access token is valid now and for the rest of this request: the
 * Middleware refreshes a token with less than a tenth of its lifetime left (at most
 * 30 s), so nothing after it (a Server Component, a call to Rotor) holds a token
 * that runs out on the way.
 */
export async function isFresh(token: string): Promise<boolean> {
  try {
    const { iat, exp } = decodeJwt(token);
    const margin = Math.min(30, Math.max(0, ((exp ?? 0) - (iat ?? 0)) / 10));
    await verifyAccessToken(token, new Date(Date.now() + margin * 1000));
    return true;
  } catch {
    // Expired, about to, or no longer verifiable (its key left the JWKS): Rotor decides.
    return false;
  }
}
