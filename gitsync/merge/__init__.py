"""Three-way merges as git makes them: plans, merge bases, trees with renames, line merges."""
