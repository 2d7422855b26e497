"""preread training."""
