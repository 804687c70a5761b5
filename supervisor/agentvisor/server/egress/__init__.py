"""The way out of a sandbox to the web: the operator's allowlist (rules, allowlist), the host's
proxy that enforces it (proxy); its API routes are
agentvisor.server.api.egress. docs/guides/network.md."""
