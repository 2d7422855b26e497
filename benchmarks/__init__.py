"""preread benchmarks."""
