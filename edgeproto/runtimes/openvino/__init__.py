"""OpenVINO: runner (with per-family ConversionExtensions) and compiler."""
