"""qkvgui: a desktop attention explorer."""
