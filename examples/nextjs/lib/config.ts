import "server-only";

/**
 * The BFF's settings, read from the environment once, on first use (never at
 * import time: `next build` imports every module without them). A missing or
 * bad value stops the request with a message naming the variable.
 */
export interface Config {
  /** ROTOR_ISSUER: the tokens' `iss`, byte for byte, and the base of Rotor's endpoints. */
  issuer: string;
  /** ROTOR_AUDIENCE: the `aud` to require (Rotor's default: the issuer). */
  audience: string;
  /** ROTOR_SIGNING_ALG: the one algorithm accepted (RFC 8725 3.1: never trust the header's). */
  algorithm: string;
  /** ROTOR_CLIENT_ID / ROTOR_CLIENT_SECRET: this server, a confidential client of Rotor. */
  clientId: string;
  clientSecret: string;
  /** SESSION_SECRET: 32 bytes (base64url) that encrypt the session cookie (A256GCM). */
  sessionKey: Uint8Array;
  /** APP_ORIGIN: this app's own origin; state-changing requests from any other are refused. */
  appOrigin: string;
  /** ROTOR_REFRESH_IDLE_TTL, ROTOR_FAMILY_MAX_TTL: Rotor's windows, in seconds (same values as Rotor's). */
  refreshIdleTtl: number;
  familyMaxTtl: number;
}

let loaded: Config | undefined;

export function config(): Config {
  loaded ??= load(process.env);
  return loaded;
}

function load(env: NodeJS.ProcessEnv): Config {
  const issuer = required(env, "ROTOR_ISSUER");
  return {
    issuer,
    audience: env.ROTOR_AUDIENCE?.trim() || issuer,
    algorithm: env.ROTOR_SIGNING_ALG?.trim() || "ES256",
    clientId: required(env, "ROTOR_CLIENT_ID"),
    clientSecret: required(env, "ROTOR_CLIENT_SECRET"),
    sessionKey: key(required(env, "SESSION_SECRET")),
    appOrigin: new URL(required(env, "APP_ORIGIN")).origin,
    refreshIdleTtl: seconds(env, "ROTOR_REFRESH_IDLE_TTL"),
    familyMaxTtl: seconds(env, "ROTOR_FAMILY_MAX_TTL"),
  };
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const value = env[name]?.trim();
  if (!value) throw new Error(`${name} is not set (see examples/nextjs/README.md)`);
  return value;
}

function seconds(env: NodeJS.ProcessEnv, name: string): number {
  const value = Number(required(env, name));
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer (seconds)`);
  return value;
}

function key(text: string): Uint8Array {
  const bytes = Buffer.from(text, "base64url");
  if (bytes.length !== 32) throw new Error("SESSION_SECRET must be 32 random bytes, base64url");
  return new Uint8Array(bytes);
}
