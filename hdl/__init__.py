"""Amaranth components: the Copper core, the UART link and the board-independent top."""
