"""IAPO: Input Attribution-Aware Policy Optimization for visual tool use in small vision-language agents."""
