"""The pure core: specs, teams, briefings, recurrence, the delivery state machine, routing,
rate limits. No I/O, no other layer: everything here is a function of its inputs."""
