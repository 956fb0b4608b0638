import { NextResponse, type NextRequest } from "next/server";

import { here } from "@/lib/origin";
import { callerOf, isFresh, refresh, SessionOver, type Tokens } from "@/lib/rotor";
import { clearSessionCookie, renewedSession, seal, SESSION_COOKIE, setSessionCookie, unseal } from "@/lib/session";

/**
 * Every request to a page or API behind the login: verify the access token locally
 * (JWKS, no call to Rotor), and when it has expired (or is about to), refresh it at
 * Rotor's /refresh and hand the new cookie both to the browser and to the rest of
 * this request.
 */
export async function middleware(request: NextRequest): Promise<NextResponse> {
  const sealed = request.cookies.get(SESSION_COOKIE)?.value;
  const session = sealed ? await unseal(sealed) : null;
  if (!session) return signedOut(request, sealed !== undefined);
  if (await isFresh(session.accessToken)) return NextResponse.next();

  const startedAt = Date.now();
  let tokens: Tokens;
  try {
    tokens = await refresh(session.refreshToken, callerOf(request.headers));
  } catch (error) {
    if (error instanceof SessionOver) return signedOut(request, true);
    return unavailable(request);
  }
  const renewed = renewedSession(session, tokens, startedAt);
  const value = await seal(renewed);

  // A Set-Cookie on the response reaches the browser only: Server Components and
  // Route Handlers read this request's Cookie header. So the request that goes on
  // carries the new cookie too, or they would still see the expired token.
  request.cookies.set(SESSION_COOKIE, value);
  const headers = new Headers(request.headers);
  const response = NextResponse.next({ request: { headers } });
  setSessionCookie(response.cookies, value, renewed);
  return response;
}

function isApi(request: NextRequest): boolean {
  return request.nextUrl.pathname.startsWith("/api/");
}

/** No session (any more): pages go to /login, APIs answer 401; a dead cookie is deleted. */
function signedOut(request: NextRequest, hadCookie: boolean): NextResponse {
  const response = isApi(request)
    ? NextResponse.json({ error: "signed_out" }, { status: 401 })
    : NextResponse.redirect(here("/login"));
  if (hadCookie) clearSessionCookie(response.cookies);
  return response;
}

/** Rotor did not answer: the session is not over, so the cookie stays for a retry. */
function unavailable(request: NextRequest): NextResponse {
  const headers = { "retry-after": "1", "cache-control": "no-store" };
  return isApi(request)
    ? NextResponse.json({ error: "temporarily_unavailable" }, { status: 503, headers })
    : new NextResponse("Sign-in service unavailable: try again in a moment.", { status: 503, headers });
}

export const config = {
  // The Node.js runtime (stable since Next.js 15.5): one process, so the refresh
  // single flight in lib/rotor.ts is shared by every request it serves.
  runtime: "nodejs",
  matcher: ["/dashboard/:path*", "/devices/:path*", "/api/me", "/api/sessions/:path*"],
};
