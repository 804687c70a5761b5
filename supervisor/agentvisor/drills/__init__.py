"""Drills users run themselves: `agentvisor chaos` (exactly-once under kills) and `agentvisor
load` (throughput and latency), each on a throwaway team that touches nothing else."""
