"""The way out of a sandbox to the web: the operator's allowlist (rules, allowlist), the host's
proxy that enforces it (proxy), and its API routes (routes). docs/guides/network.md."""
