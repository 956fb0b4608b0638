import "server-only";

import { EncryptJWT, jwtDecrypt } from "jose";
import { cookies } from "next/headers";
import { redirect } from "next/navigation";
import { cache } from "react";

import { config } from "./config";
import { verifyAccessToken, type Tokens } from "./rotor";

/**
 * The only thing the browser holds (draft-ietf-oauth-browser-based-apps 6.1): the
 * tokens, encrypted under SESSION_SECRET. `__Host-` (RFC 6265bis 4.1.3.2) makes the
 * browser refuse it unless Secure, Path=/ and without Domain, so no sibling host can
 * set or shadow it.
 */
export const SESSION_COOKIE = "__Host-session";

export interface Session {
  accessToken: string;
  refreshToken: string;
  userId: string;
  username: string;
  /** Rotor's family id (`sid`): one login session. */
  familyId: string;
  /** Epoch seconds: the family's absolute limit (login + ROTOR_FAMILY_MAX_TTL). */
  familyEnds: number;
  /** Epoch seconds: this cookie's end, the refresh token's idle window, never past familyEnds. */
  expires: number;
}

/** What the cookie jar of a response (NextResponse.cookies) or of a Route Handler offers. */
interface CookieJar {
  set(name: string, value: string, options: CookieOptions): unknown;
}

interface CookieOptions {
  httpOnly: true;
  secure: true;
  sameSite: "lax";
  path: "/";
  expires: Date;
  maxAge: number;
}

function options(expires: number): CookieOptions {
  // No Domain: host-only, as __Host- requires. Max-Age (what browsers use) and
  // Expires (for the rest) end at the same second.
  const maxAge = Math.max(0, expires - Math.ceil(Date.now() / 1000));
  return { httpOnly: true, secure: true, sameSite: "lax", path: "/", expires: new Date(expires * 1000), maxAge };
}

export function setSessionCookie(jar: CookieJar, sealed: string, session: Session): void {
  jar.set(SESSION_COOKIE, sealed, options(session.expires));
}

/** Deleting a __Host- cookie takes the same attributes as setting it, or the browser ignores it. */
export function clearSessionCookie(jar: CookieJar): void {
  jar.set(SESSION_COOKIE, "", options(0));
}

const ENCRYPTION = { alg: "dir", enc: "A256GCM" } as const;

export async function seal(session: Session): Promise<string> {
  return new EncryptJWT({
    at: session.accessToken,
    rt: session.refreshToken,
    name: session.username,
    sid: session.familyId,
    fam: session.familyEnds,
  })
    .setProtectedHeader(ENCRYPTION)
    .setSubject(session.userId)
    .setIssuedAt()
    .setExpirationTime(session.expires)
    .encrypt(config().sessionKey);
}

/** The session in a cookie value, or null (not ours, tampered with, or past its end). */
export async function unseal(value: string): Promise<Session | null> {
  try {
    const { payload } = await jwtDecrypt(value, config().sessionKey, {
      keyManagementAlgorithms: [ENCRYPTION.alg],
      contentEncryptionAlgorithms: [ENCRYPTION.enc],
      requiredClaims: ["sub", "exp"],
    });
    const { at, rt, name, sid, fam } = payload;
    if (
      typeof at !== "string" ||
      typeof rt !== "string" ||
      typeof name !== "string" ||
      typeof sid !== "string" ||
      typeof fam !== "number"
    ) {
      return null;
    }
    return {
      accessToken: at,
      refreshToken: rt,
      userId: payload.sub!,
      username: name,
      familyId: sid,
      familyEnds: fam,
      expires: payload.exp!,
    };
  } catch {
    return null;
  }
}

/**
 * A new session from a password login. `startedAt` (ms) is taken before the request
 * to Rotor, so both windows counted from it end no later than Rotor's own.
 */
export async function startSession(tokens: Tokens, username: string, startedAt: number): Promise<Session> {
  const claims = await verifyAccessToken(tokens.access_token);
  const start = Math.floor(startedAt / 1000);
  const familyEnds = start + config().familyMaxTtl;
  return {
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    userId: claims.sub,
    username,
    familyId: claims.sid,
    familyEnds,
    expires: Math.min(start + config().refreshIdleTtl, familyEnds),
  };
}

/** The session after a rotation: a new idle window from `startedAt`, the same absolute limit. */
export function renewedSession(session: Session, tokens: Tokens, startedAt: number): Session {
  const start = Math.floor(startedAt / 1000);
  return {
    ...session,
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    expires: Math.min(start + config().refreshIdleTtl, session.familyEnds),
  };
}

/**
 * The session of this request, or null: the cookie (as the Middleware left it,
 * refreshed if it had to be) unsealed, and its access token verified again here, so
 * no page relies on the Middleware having run. Memoised for the request.
 */
export const getSession = cache(async (): Promise<Session | null> => {
  const value = (await cookies()).get(SESSION_COOKIE)?.value;
  if (!value) return null;
  const session = await unseal(value);
  if (!session) return null;
  try {
    await verifyAccessToken(session.accessToken);
  } catch {
    return null;
  }
  return session;
});

/** The data-access check of every page behind a login: the session, or off to /login. */
export const verifySession = cache(async (): Promise<Session> => {
  const session = await getSession();
  if (!session) redirect("/login");
  return session;
});
