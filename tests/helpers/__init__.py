"""What tests share: CLI loading, scripted policies, data-file writers and `RunIf` skips."""
