"""The pure core: parsing, encoding, rendering and planning. No I/O, clock or randomness."""
