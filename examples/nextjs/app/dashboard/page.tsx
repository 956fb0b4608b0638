import { verifySession } from "@/lib/session";

/** A Server Component behind verifySession(): it renders only for a live session. */
export default async function Dashboard() {
  const session = await verifySession();
  return (
    <>
      <h1>Dashboard</h1>
      <p>
        Signed in as <strong data-testid="username">{session.username}</strong>
      </p>
      <p>
        <small>
          user <code data-testid="user-id">{session.userId}</code> · session{" "}
          <code data-testid="session-id">{session.familyId}</code>
        </small>
      </p>
      <p>
        <a href="/devices">Your devices</a>
      </p>
      <form method="post" action="/api/logout">
        <button type="submit">Sign out</button>
      </form>
    </>
  );
}
