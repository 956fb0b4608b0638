import "server-only";

import { NextResponse } from "next/server";

import { config } from "./config";

/**
 * Cross-site request forgery: every state-changing route answers 403 unless the
 * request's Origin is this app's own (OWASP CSRF cheat sheet, "Verifying origin with
 * standard headers"; browsers send Origin with every POST). SameSite=Lax already keeps
 * the cookie off cross-site POSTs; this also refuses same-site, cross-origin ones
 * (another port, a sibling subdomain) and login forgery, which needs no cookie.
 */
export function refuseCrossSite(request: Request): NextResponse | null {
  if (request.headers.get("origin") === config().appOrigin) return null;
  return NextResponse.json({ error: "cross-site request refused" }, { status: 403 });
}

/** An absolute URL on this app, for redirects. */
export function here(path: string): URL {
  return new URL(path, config().appOrigin);
}
