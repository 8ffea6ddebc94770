"""Developer tooling for the pgpubsub repository (not shipped in the wheel)."""
