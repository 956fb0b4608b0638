import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  reactStrictMode: true,
  poweredByHeader: false,
  // The browser test (tests/test_browser.py) builds into a folder of its own, so it
  // never overwrites the build of an example you are running.
  distDir: process.env.NEXT_DIST_DIR || ".next",
  // No ESLint setup ships with this example; strict TypeScript is checked during the build.
  eslint: { ignoreDuringBuilds: true },
};

export default nextConfig;
