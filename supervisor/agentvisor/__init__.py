"""agentvisor: runs teams of AI coding agents, each sealed in its own container sandbox.

The layers, each importing only from those below it (docs/architecture.md#layers, checked by
`make lint`): cli > launch, drills > server > model > sandbox > git > store > core > client,
config, errors, clock.
"""

__version__ = "0.1.0"
