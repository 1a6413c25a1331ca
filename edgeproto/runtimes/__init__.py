"""Runtime backends behind one small contract. Imports no torch: this is what runs on the device."""
