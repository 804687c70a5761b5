"""Test support that users may run too: a scripted stand-in for the Anthropic Messages API
(`python -m agentvisor.testing.model_server`), for tests and dry runs of Claude Code sandboxes."""
