import { NextResponse, type NextRequest } from "next/server";

import { here, refuseCrossSite } from "@/lib/origin";
import { revokeOtherDevices, SessionOver } from "@/lib/rotor";
import { getSession } from "@/lib/session";

/** "Sign out all other devices": POST /sessions/revoke-others; this session lives on. */
export async function POST(request: NextRequest): Promise<NextResponse> {
  const refused = refuseCrossSite(request);
  if (refused) return refused;
  const session = await getSession();
  if (!session) return NextResponse.redirect(here("/login"), 303);
  let revoked: number;
  try {
    revoked = await revokeOtherDevices(session.accessToken);
  } catch (error) {
    if (error instanceof SessionOver) return NextResponse.redirect(here("/login"), 303);
    throw error;
  }
  return NextResponse.redirect(here(`/devices?signed-out=${revoked}`), 303);
}
