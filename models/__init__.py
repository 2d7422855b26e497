"""preread models."""
