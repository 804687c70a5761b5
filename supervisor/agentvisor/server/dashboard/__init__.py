"""The live dashboard: its routes, the state it shows (pure), and its static page."""
