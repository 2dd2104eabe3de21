"""Live documents and git branches: continuous commits, branch and merge operations, git threads."""
