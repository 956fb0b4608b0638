import { redirect } from "next/navigation";

import { listDevices, SessionOver, type Device } from "@/lib/rotor";
import { verifySession } from "@/lib/session";

const NOTICES: Record<string, string> = { unknown: "That session had already ended." };

/** "Your devices": GET /sessions at Rotor with the user's own access token, checked live there. */
export default async function Devices({ searchParams }: { searchParams: Promise<Record<string, string | string[]>> }) {
  const session = await verifySession();
  const query = await searchParams;
  const devices = await listDevices(session.accessToken).catch((error: unknown) => {
    if (error instanceof SessionOver) return null; // revoked at Rotor: this session is over
    throw error;
  });
  if (devices === null) redirect("/login");
  const signedOut = typeof query["signed-out"] === "string" ? Number(query["signed-out"]) : null;
  const error = typeof query.error === "string" ? NOTICES[query.error] : undefined;
  return (
    <>
      <h1>Your devices</h1>
      {signedOut !== null && (
        <p role="status">
          Signed out {signedOut} {signedOut === 1 ? "device" : "devices"}.
        </p>
      )}
      {error && <p role="alert">{error}</p>}
      <ul className="devices">
        {devices.map((device) => (
          <DeviceRow key={device.id} device={device} />
        ))}
      </ul>
      {devices.length > 1 && (
        <form method="post" action="/api/sessions/revoke-others">
          <button type="submit">Sign out all other devices</button>
        </form>
      )}
      <p>
        <a href="/dashboard">Back to the dashboard</a>
      </p>
    </>
  );
}

function DeviceRow({ device }: { device: Device }) {
  return (
    <li data-session-id={device.id} data-current={String(device.current)}>
      <strong data-field="user-agent">{device.last_user_agent ?? "unknown browser"}</strong>
      {device.current && <em> (this device)</em>}
      <br />
      <small>
        {device.client_name} · signed in {device.created_at} from {device.login_ip ?? "?"} · last seen{" "}
        {device.last_rotated_at ?? device.created_at} from {device.last_ip ?? "?"}
      </small>
      {!device.current && (
        <div>
          <form method="post" action={`/api/sessions/${encodeURIComponent(device.id)}/revoke`}>
            <button type="submit">Sign out this device</button>
          </form>
        </div>
      )}
    </li>
  );
}
