"""The device-side product: the persistent explainer, explain over images / folders / video / camera,
the figure, "because" importances, the HTTP server, verify a bundle. Imports no torch."""
