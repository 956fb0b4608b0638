import { NextResponse, type NextRequest } from "next/server";

import { here, refuseCrossSite } from "@/lib/origin";
import { revokeDevice, SessionOver } from "@/lib/rotor";
import { getSession } from "@/lib/session";

/** "Sign out this device": DELETE /sessions/{id} at Rotor with the user's own token. */
export async function POST(request: NextRequest, { params }: { params: Promise<{ id: string }> }): Promise<NextResponse> {
  const refused = refuseCrossSite(request);
  if (refused) return refused;
  const session = await getSession();
  if (!session) return NextResponse.redirect(here("/login"), 303);
  const { id } = await params;
  let revoked: boolean;
  try {
    revoked = await revokeDevice(session.accessToken, id);
  } catch (error) {
    if (error instanceof SessionOver) return NextResponse.redirect(here("/login"), 303);
    throw error;
  }
  return NextResponse.redirect(here(revoked ? "/devices?signed-out=1" : "/devices?error=unknown"), 303);
}
