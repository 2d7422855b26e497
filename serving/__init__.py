"""preread serving."""
