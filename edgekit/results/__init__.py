"""Results: tables on screen, the SQLite store and the HTML/Markdown report."""
