import { NextResponse, type NextRequest } from "next/server";

import { here, refuseCrossSite } from "@/lib/origin";
import { callerOf, passwordGrant } from "@/lib/rotor";
import { seal, setSessionCookie, startSession } from "@/lib/session";

/** The login form's target: the password grant at Rotor, then the session cookie. */
export async function POST(request: NextRequest): Promise<NextResponse> {
  const refused = refuseCrossSite(request);
  if (refused) return refused;
  const form = await request.formData().catch(() => null);
  const username = form?.get("username");
  const password = form?.get("password");
  if (typeof username !== "string" || typeof password !== "string" || !username || !password) {
    return back("missing");
  }
  const startedAt = Date.now();
  const login = await passwordGrant(username, password, callerOf(request.headers));
  if (!login.ok) return back(login.reason);
  const session = await startSession(login.tokens, username, startedAt);
  // 303: the browser follows with a GET, and the form is not posted again on reload.
  const response = NextResponse.redirect(here("/dashboard"), 303);
  setSessionCookie(response.cookies, await seal(session), session);
  return response;
}

function back(error: string): NextResponse {
  return NextResponse.redirect(here(`/login?error=${error}`), 303);
}
