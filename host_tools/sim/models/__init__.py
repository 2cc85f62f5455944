"""CPython models of the simulated board: signals (what the world does) and sensor fakes (the
bytes each sensor answers with)."""
