"""agentvisor: runs teams of AI coding agents, each sealed in its own container sandbox."""

__version__ = "0.1.0"
