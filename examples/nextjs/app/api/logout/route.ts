import { NextResponse, type NextRequest } from "next/server";

import { here, refuseCrossSite } from "@/lib/origin";
import { revoke, RotorUnavailable } from "@/lib/rotor";
import { clearSessionCookie, SESSION_COOKIE, unseal } from "@/lib/session";

/**
 * Sign out: Rotor revokes the family first (RFC 7009, reason `logout`), so the cookie,
 * even if copied, can never be refreshed again; only then is the cookie deleted.
 */
export async function POST(request: NextRequest): Promise<NextResponse> {
  const refused = refuseCrossSite(request);
  if (refused) return refused;
  const sealed = request.cookies.get(SESSION_COOKIE)?.value;
  const session = sealed ? await unseal(sealed) : null;
  if (session) {
    try {
      await revoke(session.refreshToken);
    } catch (error) {
      if (!(error instanceof RotorUnavailable)) throw error;
      // The family would live on: keep the cookie, so signing out can be tried again.
      return new NextResponse("Could not sign out: the sign-in service is unavailable. Try again.", {
        status: 503,
        headers: { "retry-after": "1" },
      });
    }
  }
  const response = NextResponse.redirect(here("/login?signed-out=1"), 303);
  if (sealed !== undefined) clearSessionCookie(response.cookies);
  return response;
}
