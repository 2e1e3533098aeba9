"""Selection: quality rules over signals (`rules`) and the recipes that combine them
(`recipes`, with the built-in recipe files in `recipes/`)."""
