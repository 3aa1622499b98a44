"""Input attribution: components of a trajectory, attribution methods, and divergences between distributions."""
