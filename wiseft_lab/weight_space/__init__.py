"""Weight space: interpolation (WiSE-FT), soups (uniform, greedy, learned), Fisher merging, output ensembles."""
