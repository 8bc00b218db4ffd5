"""techniques stage."""
