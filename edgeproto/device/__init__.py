"""The device-side product: explain an image, draw the figure, verify a bundle. Imports no torch."""
