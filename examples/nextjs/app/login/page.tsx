const ERRORS: Record<string, string> = {
  invalid: "Wrong username or password.",
  locked: "Too many failed attempts: try again later.",
  missing: "Enter your username and password.",
  unavailable: "The sign-in service is unavailable: try again in a moment.",
};

/** A plain HTML form: the password goes to this app's Route Handler, never to the browser's storage. */
export default async function Login({ searchParams }: { searchParams: Promise<Record<string, string | string[]>> }) {
  const query = await searchParams;
  const error = typeof query.error === "string" ? ERRORS[query.error] : undefined;
  return (
    <>
      <h1>Sign in</h1>
      {error && <p role="alert">{error}</p>}
      {query["signed-out"] && <p role="status">You are signed out.</p>}
      <form method="post" action="/api/login">
        <label htmlFor="username">Username</label>
        <input id="username" name="username" autoComplete="username" required />
        <label htmlFor="password">Password</label>
        <input id="password" name="password" type="password" autoComplete="current-password" required />
        <div>
          <button type="submit">Sign in</button>
        </div>
      </form>
    </>
  );
}
