"""The agent: tools, tool-call parsing, trajectories and the batched multi-turn rollout."""
