"""The `vpnd` command."""
