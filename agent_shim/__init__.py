"""The in-sandbox side of agentvisor: the daemon that types messages into the agent's tmux pane,
the `agent` command line, the agent profiles and a scripted demo agent.

Only the standard library and libtmux are available where this package runs.
"""

__version__ = "0.1.0"
