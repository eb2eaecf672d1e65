"""The bottom layer: settings (the one reader of the environment), vocabularies, the landing contracts,
phone handling and the contact vault. Everything else may import it; it imports nothing of the project."""
