"""One module per CLI command: its options, its run and its rendering; ``edgeproto.cli`` assembles them."""
