"""Weight space: interpolation (WiSE-FT) and, later, soups."""
