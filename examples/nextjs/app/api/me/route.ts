import { NextResponse } from "next/server";

import { getSession } from "@/lib/session";

/** Who is signed in, for the page's own scripts: never a token. */
export async function GET(): Promise<NextResponse> {
  const session = await getSession();
  const headers = { "cache-control": "no-store" };
  if (!session) return NextResponse.json({ error: "signed_out" }, { status: 401, headers });
  return NextResponse.json(
    { user_id: session.userId, username: session.username, session_id: session.familyId },
    { headers },
  );
}
