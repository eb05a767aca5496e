"""The window's panels, each bound to the session in its constructor: controls, editors, views, inspector."""
