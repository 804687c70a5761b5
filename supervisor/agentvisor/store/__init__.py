"""The SQLite store: the schedule, messages, agents, events and the queue, with its
migrations and group commit. Knows the core, nothing above it."""
